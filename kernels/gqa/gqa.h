// Causal grouped-query self-attention (GQA, Ainslie et al. 2023; Llama 2 70B, Llama 3): NH query
// heads share NKV key/value heads, NKV dividing NH; query head h uses kv head h / G, G = NH / NKV
// (G = NH is multi-query attention, G = 1 ordinary multi-head attention). Per (b, h), with
// scale = 1/sqrt(HS) and j = h / G:
//   P = softmax_rows(scale · Q_h K_jᵀ) over keys t' <= t (causal),   O_h = P V_j
// and in the backward pass dK_j = Σ_{h: h/G = j} dK_h, dV_j likewise: the gradients of the G query
// heads sharing a kv head are summed, in order h = j·G, j·G + 1, ... (deterministic).
//
// Layout (fused qkv, one GEMM with a ((NH + 2·NKV)·HS, C) weight): each token's row holds the NH
// q heads, then the NKV k heads, then the NKV v heads, HS floats each:
//   qkv (B, T, (NH + 2·NKV)·HS),  out (B, T, NH·HS),  stats (B, NH, T, 2).
// With NKV = NH this is exactly kernels/attention's (B, T, 3C) layout. The q and k heads are
// adjacent, so kernels/rope rotates both with one call (n_heads = NH + NKV, stride = the row).
//
// Implementation: a thin layer over kernels/attention, which takes no kv-head mapping. The forward
// pass expands qkv into the (B, T, 3·NH·HS) layout AttentionForward expects (q copied, kv head
// h / G copied into slot h) and calls it; the backward pass expands again, calls AttentionBackward
// into an expanded gradient and sums each group of G dK/dV heads into dqkv. With NKV = NH the
// expansion is skipped and AttentionForward/Backward run on qkv directly. The extra work, a copy
// of B·T·3·NH·HS floats each way, is O(T·C) against attention's O(T²·C). Numerics, the stats
// (two floats per query row; the backward pass recomputes the probabilities) and determinism
// (bitwise identical for any thread count) are those of attention.h. fp32 only (as attention).
//
// Contracts: GqaForward overwrites out and stats (AttentionStateFloats(B, T, NH)); GqaBackward
// OVERWRITES all of dqkv. Scratch is the caller's, sized by the functions below; the backward
// size depends on the OpenMP thread setting at the time of the call, like
// AttentionBackwardScratchFloats. REQUIRES (checked, abort): NKV > 0 dividing NH, HS > 0.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// Floats of scratch GqaForward needs: B·T·3·NH·HS (0 when NKV = NH).
int64_t GqaForwardScratchFloats(int B, int T, int NH, int NKV, int HS);

void GqaForward(float* out,        // (B, T, NH·HS)
                float* stats,      // (B, NH, T, 2) softmax row statistics (attention.h)
                float* scratch,    // (GqaForwardScratchFloats(B, T, NH, NKV, HS))
                const float* qkv,  // (B, T, (NH + 2·NKV)·HS)
                int B, int T, int NH, int NKV, int HS);

// The same with out in bf16 (uint16_t storage; attention.h's bf16 out): the bits of the fp32 out
// rounded. For the activation only a bf16 matrix product reads.
void GqaForward(uint16_t* out_bf16,  // (B, T, NH·HS)
                float* stats,        // (B, NH, T, 2)
                float* scratch,      // (GqaForwardScratchFloats(B, T, NH, NKV, HS))
                const float* qkv,    // (B, T, (NH + 2·NKV)·HS)
                int B, int T, int NH, int NKV, int HS);

// Floats of scratch GqaBackward needs: two expanded (B, T, 3·NH·HS) buffers (none when
// NKV = NH) plus AttentionBackwardScratchFloats(B, T, NH·HS, NH), which depends on
// omp_get_max_threads() at the time of the call (see attention.h).
int64_t GqaBackwardScratchFloats(int B, int T, int NH, int NKV, int HS);

void GqaBackward(float* dqkv,         // (B, T, (NH + 2·NKV)·HS) overwritten
                 float* scratch,      // (GqaBackwardScratchFloats(B, T, NH, NKV, HS))
                 const float* dout,   // (B, T, NH·HS)
                 const float* qkv,    // (B, T, (NH + 2·NKV)·HS)
                 const float* stats,  // (B, NH, T, 2) from GqaForward
                 int B, int T, int NH, int NKV, int HS);

}  // namespace dstrain::kernels
