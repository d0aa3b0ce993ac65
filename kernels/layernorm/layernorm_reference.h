// Float64 reference for layernorm.h, straight from the formulas (torch.nn.LayerNorm semantics:
// biased variance, eps 1e-5).
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// Overwrites out, mean, rstd.
void LayerNormForwardReference(double* out,           // (N, C)
                               double* mean,          // (N)
                               double* rstd,          // (N)
                               const double* inp,     // (N, C)
                               const double* weight,  // (C)
                               const double* bias,    // (C)
                               int64_t N, int C);

// Accumulates into dinp, dweight, dbias.
void LayerNormBackwardReference(double* dinp,          // (N, C)
                                double* dweight,       // (C)
                                double* dbias,         // (C)
                                const double* dout,    // (N, C)
                                const double* inp,     // (N, C)
                                const double* weight,  // (C)
                                const double* mean,    // (N)
                                const double* rstd,    // (N)
                                int64_t N, int C);

}  // namespace dstrain::kernels
