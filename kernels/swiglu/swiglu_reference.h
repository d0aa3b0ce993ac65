// Float64 reference for swiglu.h: out = silu(gate)·up on [gate | up] rows, and its gradient.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// Overwrites out (N, I); inp (N, 2I) is [gate | up].
void SwiGluForwardReference(double* out, const double* inp, int64_t N, int I);

// Overwrites dinp (N, 2I) with [d gate | d up]; dout (N, I).
void SwiGluBackwardReference(double* dinp, const double* inp, const double* dout, int64_t N, int I);

}  // namespace dstrain::kernels
