// GQA helpers: kv-head expansion and per-group gradient sums (grid-stride loops).
#include "kernels/cuda_common/device_common.cuh"
#include "kernels/gqa/cuda/gqa_launch.h"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kThreads = 256;

// One element of the expanded (rows, 3C) tensor per index, C = NH·HS.
__global__ void GqaExpandKernel(float* expanded, const float* qkv, int64_t n, int NH, int NKV,
                                int HS) {
  const int64_t C = static_cast<int64_t>(NH) * HS;
  const int64_t src_row = static_cast<int64_t>(NH + 2 * NKV) * HS;
  const int G = NH / NKV;
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    const int64_t row = i / (3 * C);
    const int64_t col = i - row * 3 * C;
    const int part = static_cast<int>(col / C);  // 0: q, 1: k, 2: v
    const int64_t within = col - part * C;
    int64_t src_col = within;
    if (part > 0) {
      const int h = static_cast<int>(within / HS);
      const int64_t d = within - static_cast<int64_t>(h) * HS;
      const int64_t kv_head = (part == 1 ? NH : NH + NKV) + h / G;
      src_col = kv_head * HS + d;
    }
    expanded[i] = qkv[row * src_row + src_col];
  }
}

// One element of the (rows, (NH + 2·NKV)·HS) gradient per index.
__global__ void GqaReduceKernel(float* dqkv, const float* dexpanded, int64_t n, int NH, int NKV,
                                int HS) {
  const int64_t C = static_cast<int64_t>(NH) * HS;
  const int64_t dst_row = static_cast<int64_t>(NH + 2 * NKV) * HS;
  const int G = NH / NKV;
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    const int64_t row = i / dst_row;
    const int64_t col = i - row * dst_row;
    const float* src = dexpanded + row * 3 * C;
    if (col < C) {
      dqkv[i] = src[col];
      continue;
    }
    const int64_t head = col / HS;  // NH .. NH + 2·NKV − 1
    const int64_t d = col - head * HS;
    const int part = head < NH + NKV ? 1 : 2;
    const int64_t j = head - (part == 1 ? NH : NH + NKV);
    const float* g0 = src + part * C + j * G * HS + d;
    float sum = g0[0];
    for (int g = 1; g < G; ++g) sum += g0[static_cast<int64_t>(g) * HS];
    dqkv[i] = sum;
  }
}

}  // namespace

cudaError_t LaunchGqaExpand(float* expanded, const float* qkv, int64_t rows, int NH, int NKV,
                            int HS, cudaStream_t stream) {
  const int64_t n = rows * 3 * NH * static_cast<int64_t>(HS);
  DT_LAUNCH(GqaExpandKernel, GridStrideBlocks(n, kThreads), kThreads, stream, expanded, qkv, n, NH,
            NKV, HS);
  return cudaGetLastError();
}

cudaError_t LaunchGqaReduce(float* dqkv, const float* dexpanded, int64_t rows, int NH, int NKV,
                            int HS, cudaStream_t stream) {
  const int64_t n = rows * (NH + 2 * NKV) * static_cast<int64_t>(HS);
  DT_LAUNCH(GqaReduceKernel, GridStrideBlocks(n, kThreads), kThreads, stream, dqkv, dexpanded, n,
            NH, NKV, HS);
  return cudaGetLastError();
}

}  // namespace dstrain::kernels::gpu
