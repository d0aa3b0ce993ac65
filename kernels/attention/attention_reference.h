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

// attention_bf16.h's arithmetic in float64: Q, K, V and dO rounded to bf16 (nearest even, 8
// significant bits); S, the softmax and its backward step exact; P rounded to bf16 for O = P V and
// dV = Pᵀ dO, dS rounded to bf16 for dQ = dS K and dK = dSᵀ Q. Overwrites out (before its final
// rounding to bf16), stats (per query row: max of S, 1 / Σ exp(S − max)) and dqkv.
void AttentionBf16ProductsReference(double* out,         // (B, T, C)
                                    double* stats,       // (B, NH, T, 2)
                                    double* dqkv,        // (B, T, 3C)
                                    const double* qkv,   // (B, T, 3C)
                                    const double* dout,  // (B, T, C)
                                    int B, int T, int C, int NH);

// x rounded to the nearest bf16 value, ties to even (normal range; 0 stays 0).
double RoundToBf16(double x);

}  // namespace dstrain::kernels
