// Attention helpers: head packing (grid-stride copies) and the causal softmax (warp per row).
#include <cmath>

#include "kernels/attention/cuda/attention_launch.h"
#include "kernels/cuda_common/device_common.cuh"
#include "kernels/cuda_common/reduce.cuh"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarpSize;

// Index i of the (B, NH, T, HS) heads tensor -> offset in the (B·T, row_stride) rows tensor.
__device__ __forceinline__ int64_t RowOffset(int64_t i, int64_t row_stride, int T, int NH, int HS) {
  const int d = static_cast<int>(i % HS);
  const int64_t bht = i / HS;
  const int t = static_cast<int>(bht % T);
  const int64_t bh = bht / T;
  const int h = static_cast<int>(bh % NH);
  const int64_t b = bh / NH;
  return (b * T + t) * row_stride + static_cast<int64_t>(h) * HS + d;
}

__global__ void ToHeadsKernel(float* heads, const float* rows, int64_t row_stride, int64_t n, int T,
                              int NH, int HS) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    heads[i] = rows[RowOffset(i, row_stride, T, NH, HS)];
  }
}

__global__ void FromHeadsKernel(float* rows, int64_t row_stride, const float* heads, int64_t n,
                                int T, int NH, int HS) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    rows[RowOffset(i, row_stride, T, NH, HS)] = heads[i];
  }
}

__global__ void CausalSoftmaxForwardWarpPerRowKernel(float* att, int64_t num_rows, int T) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (row >= num_rows) return;  // whole warps leave together
  const int len = static_cast<int>(row % T) + 1;
  float* x = att + row * T;
  float m = -INFINITY;
  for (int j = lane; j < len; j += kWarpSize) m = fmaxf(m, x[j]);
  m = WarpReduceMax(m);
  float s = 0.0f;
  for (int j = lane; j < len; j += kWarpSize) s += expf(x[j] - m);
  s = WarpReduceSum(s);
  for (int j = lane; j < T; j += kWarpSize) x[j] = j < len ? expf(x[j] - m) / s : 0.0f;
}

__global__ void CausalSoftmaxBackwardWarpPerRowKernel(float* datt, const float* att,
                                                      int64_t num_rows, int T) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (row >= num_rows) return;
  const int len = static_cast<int>(row % T) + 1;
  const float* a = att + row * T;
  float* d = datt + row * T;
  float dot = 0.0f;
  for (int j = lane; j < len; j += kWarpSize) dot += a[j] * d[j];
  dot = WarpReduceSum(dot);
  for (int j = lane; j < T; j += kWarpSize) d[j] = j < len ? a[j] * (d[j] - dot) : 0.0f;
}

}  // namespace

cudaError_t LaunchToHeads(float* heads, const float* rows, int64_t row_stride, int B, int T, int NH,
                          int HS, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(B) * NH * T * HS;
  DT_LAUNCH(ToHeadsKernel, GridStrideBlocks(n, kThreads), kThreads, stream, heads, rows, row_stride,
            n, T, NH, HS);
  return cudaGetLastError();
}

cudaError_t LaunchFromHeads(float* rows, int64_t row_stride, const float* heads, int B, int T,
                            int NH, int HS, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(B) * NH * T * HS;
  DT_LAUNCH(FromHeadsKernel, GridStrideBlocks(n, kThreads), kThreads, stream, rows, row_stride,
            heads, n, T, NH, HS);
  return cudaGetLastError();
}

cudaError_t LaunchCausalSoftmaxForward(float* att, int64_t num_rows, int T, cudaStream_t stream) {
  DT_LAUNCH(CausalSoftmaxForwardWarpPerRowKernel, CeilBlocks(num_rows, kWarpsPerBlock), kThreads,
            stream, att, num_rows, T);
  return cudaGetLastError();
}

cudaError_t LaunchCausalSoftmaxBackward(float* datt, const float* att, int64_t num_rows, int T,
                                        cudaStream_t stream) {
  DT_LAUNCH(CausalSoftmaxBackwardWarpPerRowKernel, CeilBlocks(num_rows, kWarpsPerBlock), kThreads,
            stream, datt, att, num_rows, T);
  return cudaGetLastError();
}

}  // namespace dstrain::kernels::gpu
