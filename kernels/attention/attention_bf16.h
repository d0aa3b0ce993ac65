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
// is complete within its block, so its softmax is exact, not online. No (T, T) buffer: per
// thread, a 32-row panel of scores and packed copies of the head's Q, K, V (and dO) in bf16. The
// backward pass recomputes each block's scores with the same products and its probabilities with
// the forward's operations, so they are bitwise the forward's; dKᵀ and dVᵀ accumulate over the
// blocks in f32 and are transposed into dqkv at the end.
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
// to 32: 6·Tp·hsp + 128·Tp + 32·hsp floats (0.53 MB for T = 256, hs = 64).
int64_t AttentionBackwardBf16ScratchFloats(int B, int T, int C, int NH);

void AttentionBackwardBf16(float* dqkv,         // (B, T, 3C) overwritten
                           float* scratch,      // (AttentionBackwardBf16ScratchFloats(...))
                           const float* dout,   // (B, T, C)
                           const float* qkv,    // (B, T, 3C)
                           const float* stats,  // from AttentionForwardBf16
                           int B, int T, int C, int NH, TileRoute route);

}  // namespace dstrain::kernels
