// Warp, block and column reductions for this project's kernels. Device functions take lane and
// warp ids as arguments rather than reading threadIdx, so the same code serves 1-D and 2-D blocks.
// All of them are deterministic: a fixed tree for a fixed launch configuration.
#pragma once

#include "kernels/cuda_common/device_common.cuh"

namespace dstrain::kernels::gpu {

// Sum / max over the 32 lanes of a warp; every lane receives the result.
// REQUIRES: all 32 lanes of the warp call it (no divergence, no exited lanes).
template <typename T>
__device__ __forceinline__ T WarpReduceSum(T v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(kFullWarpMask, v, offset);
  }
  return v;
}

template <typename T>
__device__ __forceinline__ T WarpReduceMax(T v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const T other = __shfl_xor_sync(kFullWarpMask, v, offset);
    v = other > v ? other : v;
  }
  return v;
}

// Sum over the whole block; every thread receives the result. `shared` holds >= 32 T and may be
// reused as soon as this returns. lane = linear thread id % 32, warp = linear thread id / 32.
// REQUIRES: every thread of the block calls it; the block size is a multiple of 32.
template <typename T>
__device__ __forceinline__ T BlockReduceSum(T v, T* shared, int lane, int warp, int num_warps) {
  v = WarpReduceSum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T total = lane < num_warps ? shared[lane] : T(0);
  total = WarpReduceSum(total);
  __syncthreads();  // everyone has read `shared` before a caller reuses it
  return total;
}

// ---- Column sums: out[col] += sum over rows of f(row, col) ----
//
// A functor F supplies the values and takes the sums:
//   struct F {
//     __device__ void Load(int64_t row, int col, float (&v)[K]) const;   // K values per element
//     __device__ void Store(int col, const float (&sum)[K]) const;       // e.g. dbias[col] += sum
//   };
// One block of (32, 32) threads per 32-column tile: threadIdx.x picks the column (coalesced
// loads), threadIdx.y strides over rows, and the 32 row partials are added in a fixed order.
// Deterministic; parallelism is cols / 32 blocks, which suits the GPT widths (768 .. 3072+).
inline constexpr int kColumnTile = 32;
inline constexpr int kColumnRowLanes = 32;

template <int K, typename F>
__global__ void ColumnSumKernel(F f, int64_t rows, int cols) {
  __shared__ float partial[K][kColumnRowLanes][kColumnTile + 1];
  const int col = static_cast<int>(blockIdx.x) * kColumnTile + static_cast<int>(threadIdx.x);
  float acc[K];
  for (int k = 0; k < K; ++k) acc[k] = 0.0f;
  if (col < cols) {
    for (int64_t row = threadIdx.y; row < rows; row += kColumnRowLanes) {
      float v[K];
      f.Load(row, col, v);
      for (int k = 0; k < K; ++k) acc[k] += v[k];
    }
  }
  for (int k = 0; k < K; ++k) partial[k][threadIdx.y][threadIdx.x] = acc[k];
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    float sum[K];
    for (int k = 0; k < K; ++k) {
      float s = 0.0f;
      for (int y = 0; y < kColumnRowLanes; ++y) s += partial[k][y][threadIdx.x];
      sum[k] = s;
    }
    f.Store(col, sum);
  }
}

// Launches ColumnSumKernel. REQUIRES: rows >= 0, cols > 0.
template <int K, typename F>
cudaError_t LaunchColumnSum(const F& f, int64_t rows, int cols, cudaStream_t stream) {
  auto* kernel = ColumnSumKernel<K, F>;
  DT_LAUNCH(kernel, CeilBlocks(cols, kColumnTile), dim3(kColumnTile, kColumnRowLanes), stream, f,
            rows, cols);
  return cudaGetLastError();
}

}  // namespace dstrain::kernels::gpu
