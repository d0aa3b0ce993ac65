// Causal multi-head self-attention on the GPU (CUDA), GPT-2 style, from the fused qkv projection:
//   qkv (B, T, 3C) holds q, k, v side by side, each (B, T, NH, HS) with HS = C / NH
//   att[b, h, i, :] = softmax_j<=i (q_i · k_j / sqrt(HS)),   att[b, h, i, j > i] = 0
//   out[b, i, h·HS : (h+1)·HS] = Σ_j att[b, h, i, j] · v_j
// AttentionForward overwrites `out` and all of `att` (the probabilities, saved for the backward
// pass), zeros above the diagonal included (the CPU version leaves those untouched).
// AttentionBackward OVERWRITES `dqkv` with the gradient with respect to qkv, given dout and the
// forward's qkv and att. REQUIRES: att as AttentionForward (this one) left it: the dV product
// reads whole rows, so the zeros above the diagonal must be there.
//
// Implementation (correctness first; NOT flash attention): the heads are copied out of qkv into
// (B, NH, T, HS) scratch, the scores and products are cuBLAS strided-batched GEMMs over the
// B·NH heads (the full T x T score matrix is computed and the upper triangle masked), and the
// softmax and its backward run one warp per row. Memory: the (B, NH, T, T) att tensor, plus
// scratch from the stream-ordered allocator (cudaMallocAsync on the context's stream): 4·B·T·C
// floats in the forward pass, 7·B·T·C + B·NH·T² floats in the backward pass. Deterministic.
//
// Runs on ctx.stream(); nothing is waited for. Device pointers. Errors: kInvalidArgument for
// negative sizes, C not divisible by NH, or null pointers with work to do; cuBLAS / CUDA failures
// via CublasToStatus / CudaToStatus (kResourceExhausted when the scratch does not fit).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/matmul/cuda/matmul_cuda.h"

namespace dstrain::kernels::gpu {

absl::Status AttentionForward(const CublasContext& ctx,
                              float* out,        // (B, T, C)
                              float* att,        // (B, NH, T, T)
                              const float* qkv,  // (B, T, 3C)
                              int B, int T, int C, int NH);

absl::Status AttentionBackward(const CublasContext& ctx,
                               float* dqkv,        // (B, T, 3C) overwritten
                               const float* dout,  // (B, T, C)
                               const float* qkv,   // (B, T, 3C)
                               const float* att,   // (B, NH, T, T) from AttentionForward
                               int B, int T, int C, int NH);

}  // namespace dstrain::kernels::gpu
