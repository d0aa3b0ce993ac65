// Float64 reference for rmsnorm.h, straight from the formulas:
//   rstd = 1 / sqrt(Σ_c x_c² / C + eps),  out_c = x_c · rstd · weight_c.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// Overwrites out and rstd.
void RmsNormForwardReference(double* out,           // (N, C)
                             double* rstd,          // (N)
                             const double* inp,     // (N, C)
                             const double* weight,  // (C)
                             int64_t N, int C, double eps);

// Accumulates into dinp and dweight.
void RmsNormBackwardReference(double* dinp,          // (N, C)
                              double* dweight,       // (C)
                              const double* dout,    // (N, C)
                              const double* inp,     // (N, C)
                              const double* weight,  // (C)
                              const double* rstd,    // (N)
                              int64_t N, int C);

}  // namespace dstrain::kernels
