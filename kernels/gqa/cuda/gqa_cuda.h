// Causal grouped-query self-attention on the GPU (CUDA); same math, layout and contracts as
// kernels/gqa/gqa.h: NH query heads, NKV kv heads (NKV divides NH), query head h reads kv head
// h / (NH / NKV); fused qkv (B, T, (NH + 2·NKV)·HS) = [NH q heads | NKV k heads | NKV v heads]
// per token; out (B, T, NH·HS); att (B, NH, T, T); dK, dV summed over each group's query heads.
//
// A thin layer over kernels/attention/cuda (cuBLAS batched GEMMs + warp-per-row softmax): qkv is
// expanded into the (B, T, 3·NH·HS) layout gpu::AttentionForward takes (q copied, kv head h / G
// copied into slot h), and in the backward pass gpu::AttentionBackward's expanded gradient is
// summed per group into dqkv (each sum in head order: deterministic). With NKV = NH the
// attention kernels run on qkv directly. Scratch from the stream-ordered allocator (on top of the
// attention kernels' own): 3·B·T·NH·HS floats forward, twice that backward (none when NKV = NH).
//
// Contracts as gpu::AttentionForward / AttentionBackward: the forward pass overwrites out and all
// of att (zeros above the diagonal); the backward pass OVERWRITES dqkv and REQUIRES att as this
// forward left it. fp32 only.
//
// Runs on ctx.stream(); nothing is waited for. Device pointers. Errors: kInvalidArgument for
// negative sizes, NKV <= 0 or not dividing NH, HS <= 0, or null pointers with work to do; cuBLAS /
// CUDA failures via CublasToStatus / CudaToStatus (kResourceExhausted when scratch does not fit).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/matmul/cuda/matmul_cuda.h"

namespace dstrain::kernels::gpu {

absl::Status GqaForward(const CublasContext& ctx,
                        float* out,        // (B, T, NH·HS)
                        float* att,        // (B, NH, T, T)
                        const float* qkv,  // (B, T, (NH + 2·NKV)·HS)
                        int B, int T, int NH, int NKV, int HS);

absl::Status GqaBackward(const CublasContext& ctx,
                         float* dqkv,        // (B, T, (NH + 2·NKV)·HS) overwritten
                         const float* dout,  // (B, T, NH·HS)
                         const float* qkv,   // (B, T, (NH + 2·NKV)·HS)
                         const float* att,   // (B, NH, T, T) from GqaForward
                         int B, int T, int NH, int NKV, int HS);

}  // namespace dstrain::kernels::gpu
