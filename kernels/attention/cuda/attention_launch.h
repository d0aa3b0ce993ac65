// Plain launchers of attention.cu: head (un)packing and the causal softmax. REQUIRES: all sizes
// > 0, valid device pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

// heads[b, h, t, d] = rows[(b·T + t)·row_stride + h·HS + d]: one of q / k / v out of qkv
// (row_stride 3C, `rows` offset by 0, C or 2C), or dout (row_stride C).
cudaError_t LaunchToHeads(float* heads, const float* rows, int64_t row_stride, int B, int T, int NH,
                          int HS, cudaStream_t stream);

// rows[(b·T + t)·row_stride + h·HS + d] = heads[b, h, t, d]: the inverse.
cudaError_t LaunchFromHeads(float* rows, int64_t row_stride, const float* heads, int B, int T,
                            int NH, int HS, cudaStream_t stream);

// In place over `num_rows` rows of T scores; row r is query i = r % T: softmax over columns
// 0..i, zeros after.
cudaError_t LaunchCausalSoftmaxForward(float* att, int64_t num_rows, int T, cudaStream_t stream);

// In place: datt becomes the gradient with respect to the scores,
//   datt[j] = att[j]·(datt[j] − Σ_k<=i att[k]·datt[k])  for j <= i, 0 after.
cudaError_t LaunchCausalSoftmaxBackward(float* datt, const float* att, int64_t num_rows, int T,
                                        cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
