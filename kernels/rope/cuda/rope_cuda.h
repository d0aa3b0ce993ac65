// Rotary position embeddings (RoPE) on the GPU (CUDA); same convention, table, layout and
// contracts as kernels/rope/rope.h ("rotate_half": dimension i pairs with i + D/2):
//   out[i]       = x[i]·cos(p·θ_i) − x[i + D/2]·sin(p·θ_i),   θ_i = theta^(−2i/D)
//   out[i + D/2] = x[i + D/2]·cos(p·θ_i) + x[i]·sin(p·θ_i),     p = pos_offset + t
// RopeBackward applies the inverse rotation to the gradient. Token (b, t)'s row starts at
// (b·T + t)·stride; its first n_heads·D floats are rotated (q and k together inside a fused qkv
// buffer with n_heads = NH + NKV), nothing else is touched. out may alias inp exactly.
//
// RopeTable fills the (max_pos, D) table [cos | sin] on the device in float64 (pow, cos and sin in
// double, one rounding to fp32), like the CPU RopeTable: CUDA's double functions are within 2
// double ulp, so an entry can differ from the CPU table's by one float ulp in rare rounding ties
// (never seen in the tests). Either table may be used with either kernel. fp32 only.
//
// One thread per (token, head, pair) in a grid-stride loop: deterministic. Device pointers;
// enqueued on `stream`, not waited for. Errors: kInvalidArgument for negative sizes, an odd or
// zero head_dim, positions outside [0, max_pos), strides shorter than n_heads·head_dim, theta <= 0,
// or null pointers with work to do; CUDA failures via CudaToStatus.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace dstrain::kernels::gpu {

// table: (max_pos, head_dim) floats, overwritten.
absl::Status RopeTable(float* table, int max_pos, int head_dim, double theta, cudaStream_t stream);

absl::Status RopeForward(float* out,  // (B, T, n_heads, head_dim) in rows of out_stride floats
                         int64_t out_stride,
                         const float* inp,  // (B, T, n_heads, head_dim) in rows of inp_stride
                         int64_t inp_stride,
                         const float* table,  // (max_pos, head_dim) from RopeTable
                         int max_pos, int B, int T, int n_heads, int head_dim, int pos_offset,
                         cudaStream_t stream);

absl::Status RopeBackward(float* dinp,  // (B, T, n_heads, head_dim) overwritten
                          int64_t dinp_stride,
                          const float* dout,  // (B, T, n_heads, head_dim)
                          int64_t dout_stride, const float* table, int max_pos, int B, int T,
                          int n_heads, int head_dim, int pos_offset, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
