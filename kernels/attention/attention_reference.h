// Float64 reference for attention.h: the textbook per-head loops, O(T²·hs), no blocking.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// Overwrites out and all of att (entries above the diagonal are set to 0).
void AttentionForwardReference(double* out,        // (B, T, C)
                               double* att,        // (B, NH, T, T)
                               const double* qkv,  // (B, T, 3C)
                               int B, int T, int C, int NH);

// Overwrites dqkv.
void AttentionBackwardReference(double* dqkv,        // (B, T, 3C)
                                const double* dout,  // (B, T, C)
                                const double* qkv,   // (B, T, 3C)
                                const double* att,   // (B, NH, T, T)
                                int B, int T, int C, int NH);

}  // namespace dstrain::kernels
