// Causal multi-head self-attention on a fused qkv projection (GPT-2 layout), forward and backward.
//
// qkv holds, for every token, q, k and v side by side, C columns each; head h uses columns
// [h·hs, (h+1)·hs) of each, hs = C / NH. Per (b, h), with scale = 1/sqrt(hs):
//   S = scale · Q Kᵀ              (T, T), only j <= i (causal)
//   P = softmax_rows(S)           not kept: per row, its max and 1 / Σ exp go to `stats`
//   O = P V                       written to out[b, :, h·hs : (h+1)·hs]
// Backward, from dO, with P recomputed from Q, K and stats:
//   dP = dO Vᵀ,  dS = scale · P ∘ (dP − rowsum(P ∘ dP)),  dQ = dS K,  dK = dSᵀ Q,  dV = Pᵀ dO.
//
// Implementation: (b, h) pairs are spread over OpenMP threads (static schedule). Inside a pair
// every product (Q Kᵀ and P V forward; Q Kᵀ again, dO Vᵀ, dS K, dSᵀ Q and Pᵀ dO backward) runs
// through one register-blocked micro-kernel (6 rows × 4 AVX-512 vectors, or 6 × 2 AVX2 vectors):
// it broadcasts one operand and streams the other from a packed, zero-padded per-head copy (Kᵀ, Vᵀ
// by in-register block transposes; K, Q, V, dO padded), and it skips the upper triangle exactly —
// the diagonal blocks mask the broadcast operand instead of reading it — so only the causal half
// is computed. The softmax and the dS step run on rows still in L1 between the products.
// No (T, T) buffer outlives a call: the forward pass keeps two floats per query row, and the
// backward pass recomputes each row block's probabilities into its per-thread scratch with the
// forward's own operations on the same values, so they are bitwise the forward's (and the
// gradients bitwise those of keeping P). The saved memory is B·NH·T² floats per layer (8 MB for
// B 8, NH 4, T 256; 201 MB for GPT-2's NH 12 at B 4, T 1024) for one more Q Kᵀ product and
// exponential per score in the backward pass.
// Measured on the 2-core Zen 4 dev machine (AVX-512) before the recomputation, counting the full
// T×T square as the project's reports do (the causal kernel does about half those flops): forward
// ~125 GFLOP/s on one core, ~250–300 on two; backward ~135–150 on one core, ~245–285 on two.
//
// Contracts: AttentionForward overwrites `out` and `stats`. AttentionBackward OVERWRITES dqkv (all
// 3C columns of every row) and uses `scratch`. Both are bitwise identical for any thread count
// (each (b, h) is computed by one thread in a fixed order). C must be a multiple of NH.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// Floats of `stats`: two per query row of every (b, h) pair, 2·B·NH·T.
int64_t AttentionStateFloats(int B, int T, int NH);

void AttentionForward(float* out,        // (B, T, C)
                      float* stats,      // (B, NH, T, 2) per row: max of S, 1 / Σ exp(S − max)
                      const float* qkv,  // (B, T, 3C)
                      int B, int T, int C, int NH);

// The same with out in bf16 (uint16_t storage): O computed as above, rounded to nearest even once
// as it is stored (the bits of the fp32 out rounded afterwards by kernels/cast). For the
// activation only a bf16 matrix product reads.
void AttentionForward(uint16_t* out_bf16,  // (B, T, C)
                      float* stats,        // (B, NH, T, 2)
                      const float* qkv,    // (B, T, 3C)
                      int B, int T, int C, int NH);

// Floats of scratch AttentionBackward needs: one workspace per thread it will use, which is
// min(B·NH, omp_get_max_threads()) *at the time of the call*. Size it under the same OpenMP thread
// setting as the calls (sizing with more threads than the calls use is fine; fewer is not).
// Per thread: 2·T·Tp + 2·hs·Tp + 3·T·hsp floats, Tp and hsp being T and hs rounded up to 16
// (0.85 MB per thread for T = 256, hs = 64; 9.7 MB for T = 1024).
int64_t AttentionBackwardScratchFloats(int B, int T, int C, int NH);

void AttentionBackward(float* dqkv,         // (B, T, 3C) overwritten
                       float* scratch,      // (AttentionBackwardScratchFloats(B, T, C, NH))
                       const float* dout,   // (B, T, C)
                       const float* qkv,    // (B, T, 3C)
                       const float* stats,  // (B, NH, T, 2) from AttentionForward
                       int B, int T, int C, int NH);

}  // namespace dstrain::kernels
