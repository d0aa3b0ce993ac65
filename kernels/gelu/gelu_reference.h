// Float64 reference for gelu.h, written straight from the formula with std::tanh.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// out = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
void GeluForwardReference(double* out,        // (n)
                          const double* inp,  // (n)
                          int64_t n);

// dinp = gelu'(inp)·dout (overwrites), differentiating the tanh form directly.
void GeluBackwardReference(double* dinp,        // (n)
                           const double* inp,   // (n)
                           const double* dout,  // (n)
                           int64_t n);

}  // namespace dstrain::kernels
