// Float64 reference of attention_cuda.h, written from the formulas (no GEMMs, no head packing):
// the specification the CUDA attention is tested and timed against.
#pragma once

#include <cstdint>

namespace dstrain::kernels::gpu {

// out (B, T, C) and att (B, NH, T, T) from qkv (B, T, 3C); overwrites both.
void AttentionForwardReference(double* out, double* att, const double* qkv, int B, int T, int C,
                               int NH);

// dqkv (B, T, 3C) = gradient of Σ out·dout with respect to qkv, given the forward's att;
// overwrites dqkv.
void AttentionBackwardReference(double* dqkv, const double* dout, const double* qkv,
                                const double* att, int B, int T, int C, int NH);

}  // namespace dstrain::kernels::gpu
