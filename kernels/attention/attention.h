// Causal multi-head self-attention on a fused qkv projection (GPT-2 layout), forward and backward.
//
// qkv holds, for every token, q, k and v side by side, C columns each; head h uses columns
// [h·hs, (h+1)·hs) of each, hs = C / NH. Per (b, h), with scale = 1/sqrt(hs):
//   S = scale · Q Kᵀ              (T, T), only j <= i (causal)
//   P = softmax_rows(S)           stored in `att` for the backward pass
//   O = P V                       written to out[b, :, h·hs : (h+1)·hs]
// Backward, from dO:
//   dP = dO Vᵀ,  dS = scale · P ∘ (dP − rowsum(P ∘ dP)),  dQ = dS K,  dK = dSᵀ Q,  dV = Pᵀ dO.
//
// Implementation: (b, h) pairs are spread over OpenMP threads (static schedule). Inside a pair
// every product (Q Kᵀ and P V forward; dO Vᵀ, dS K, dSᵀ Q and Pᵀ dO backward) runs through one
// register-blocked micro-kernel (6 rows × 4 AVX-512 vectors, or 6 × 2 AVX2 vectors): it
// broadcasts one operand and streams the other from a packed, zero-padded per-head copy (Kᵀ, Vᵀ
// by in-register block transposes; K, Q, V, dO padded), and it skips the upper triangle exactly —
// the diagonal blocks mask the broadcast operand instead of reading it — so only the causal half
// is computed and the upper triangle of `att` is never read. The softmax and the dS step run on
// rows still in L1 between the products; att rows are written with streaming stores when aligned.
// Measured on the 2-core Zen 4 dev machine (AVX-512), counting the full T×T square as the
// project's reports do (the causal kernel does about half those flops): forward ~125 GFLOP/s on
// one core, ~250–300 on two; backward ~135–150 on one core, ~245–285 on two.
//
// Contracts: AttentionForward overwrites `out` and the causal lower triangle (j <= i) of every
// (T, T) block of `att`; entries above the diagonal are left untouched and never read.
// AttentionBackward OVERWRITES dqkv (all 3C columns of every row) and uses `scratch`.
// Both are bitwise identical for any thread count (each (b, h) is computed by one thread in a fixed
// order). C must be a multiple of NH.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

void AttentionForward(float* out,        // (B, T, C)
                      float* att,        // (B, NH, T, T) softmax probabilities, j <= i written
                      const float* qkv,  // (B, T, 3C)
                      int B, int T, int C, int NH);

// Floats of scratch AttentionBackward needs: one workspace per thread it will use, which is
// min(B·NH, omp_get_max_threads()) *at the time of the call*. Size it under the same OpenMP thread
// setting as the calls (sizing with more threads than the calls use is fine; fewer is not).
// Per thread: T·Tp + hs·Tp + 3·T·hsp floats, Tp and hsp being T and hs rounded up to 16
// (0.5 MB per thread for T = 256, hs = 64; 5 MB for T = 1024).
int64_t AttentionBackwardScratchFloats(int B, int T, int C, int NH);

void AttentionBackward(float* dqkv,        // (B, T, 3C) overwritten
                       float* scratch,     // (AttentionBackwardScratchFloats(B, T, C, NH))
                       const float* dout,  // (B, T, C)
                       const float* qkv,   // (B, T, 3C)
                       const float* att,   // (B, NH, T, T) from AttentionForward
                       int B, int T, int C, int NH);

}  // namespace dstrain::kernels
