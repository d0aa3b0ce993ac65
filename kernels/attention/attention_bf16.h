// Causal self-attention with bf16 products (f32 accumulation), for bf16 training on CPUs with AMX:
// the same layout and contracts as attention.h (fused qkv in, out, two statistics per query row,
// dqkv overwritten), different rounding points.
//
// What is rounded to bf16 (nearest even) and what stays f32, per (b, h):
//   Q, K, V (from the f32 qkv) and dO (from the f32 dout) are rounded as they are packed;
//   S = scale · (Q Kᵀ) with the product accumulated in f32; softmax in f32 (its max and
//   1 / Σ exp kept as in attention.h); P rounded to bf16 for O = P V and for dV = Pᵀ dO;
//   dP = dO Vᵀ in f32; dS = scale · P ∘ (dP − rowsum(P ∘ dP)) from the f32 P, then rounded to
//   bf16 for dQ = dS K and dK = dSᵀ Q. O is rounded once more as it is stored in bf16.
// Every product goes through TileProductBf16 (bf16_tiles.h): on AMX tiles, or the portable route
// with the same additions in the same order.
//
// Blocking: each thread owns whole (b, h) pairs. Rows go in blocks of 32 queries; a block's scores
// span only the keys up to its last row (the causal half plus the diagonal blocks), and each row
// is complete within its block, so its softmax is exact, not online. Nothing of size (T, T)
// outlives a call. The forward pass keeps, per thread, a 32-row panel of scores and packed bf16
// copies of the head's Q, K and V. The backward pass recomputes each block's scores with the same
// products and its bf16 probabilities with the forward's operations (the same bits); it keeps
// the head's P and dS pair-interleaved in bf16 (Tp² each per thread, half the f32 kernel's
// 2·T·Tp floats of scratch), and after the blocks forms dKᵀ = Qᵀ dS and dVᵀ = dOᵀ P 32 keys at a
// time over the queries at or after them, each stripe transposed into dqkv as it is made.
//
// Contracts: AttentionForwardBf16 overwrites out and stats; AttentionBackwardBf16 overwrites all
// of dqkv and uses `scratch`. Bitwise identical for any thread count (one thread per pair, fixed
// order). C must be a multiple of NH. The kAmx route needs AmxUsable() (cpu_features.h).
#pragma once

#include <cstdint>

#include "kernels/attention/bf16_tiles.h"

namespace dstrain::kernels {

void AttentionForwardBf16(uint16_t* out,     // (B, T, C) bf16
                          float* stats,      // (B, NH, T, 2): AttentionStateFloats(B, T, NH)
                          const float* qkv,  // (B, T, 3C)
                          int B, int T, int C, int NH, TileRoute route);

// The same with out in f32: O before its final rounding (for a caller that keeps f32
// activations; the next bf16 product rounds it to the same bits as the bf16 out).
void AttentionForwardBf16(float* out,        // (B, T, C)
                          float* stats,      // (B, NH, T, 2)
                          const float* qkv,  // (B, T, 3C)
                          int B, int T, int C, int NH, TileRoute route);

// Floats of scratch AttentionBackwardBf16 needs: one workspace per thread it will use,
// min(B·NH, omp_get_max_threads()) at the time of the call (size it under the calls' thread
// setting, as attention.h's). Per thread, with Tp and hsp the sequence and head size rounded up
// to 32: 6·Tp·hsp + Tp² + 96·Tp + 32·hsp floats (0.76 MB for T = 256, hs = 64; 4.4 MB for
// T = 1024), less than AttentionBackwardScratchFloats for every T above 6·hsp.
int64_t AttentionBackwardBf16ScratchFloats(int B, int T, int C, int NH);

void AttentionBackwardBf16(float* dqkv,         // (B, T, 3C) overwritten
                           float* scratch,      // (AttentionBackwardBf16ScratchFloats(...))
                           const float* dout,   // (B, T, C)
                           const float* qkv,    // (B, T, 3C)
                           const float* stats,  // from AttentionForwardBf16
                           int B, int T, int C, int NH, TileRoute route);

}  // namespace dstrain::kernels
