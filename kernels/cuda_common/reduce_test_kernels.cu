#include "kernels/cuda_common/device_common.cuh"
#include "kernels/cuda_common/reduce.cuh"
#include "kernels/cuda_common/reduce_test_kernels.h"

namespace dstrain::kernels::gpu::testing {
namespace {

__global__ void WarpReductionsKernel(float* sums, float* maxes, const float* in, int warps) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = blockIdx.x * (blockDim.x / kWarpSize) + threadIdx.x / kWarpSize;
  if (warp >= warps) return;  // whole warps leave together
  const float v = in[warp * kWarpSize + lane];
  const float sum = WarpReduceSum(v);
  const float max = WarpReduceMax(v);
  if (lane == 0) {
    sums[warp] = sum;
    maxes[warp] = max;
  }
}

__global__ void BlockSumsKernel(double* out, const double* in, int64_t n, int64_t per_block) {
  __shared__ double shared[kWarpSize];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * per_block;
  const int64_t end = begin + per_block < n ? begin + per_block : n;
  double v = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) v += in[i];
  const double total = BlockReduceSum(v, shared, threadIdx.x % kWarpSize, threadIdx.x / kWarpSize,
                                      blockDim.x / kWarpSize);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

struct SumAndSquares {
  float* sums;
  float* squares;
  const float* in;
  int cols;
  __device__ void Load(int64_t row, int col, float (&v)[2]) const {
    const float x = in[row * cols + col];
    v[0] = x;
    v[1] = x * x;
  }
  __device__ void Store(int col, const float (&sum)[2]) const {
    sums[col] += sum[0];
    squares[col] += sum[1];
  }
};

}  // namespace

cudaError_t LaunchWarpReductions(float* sums, float* maxes, const float* in, int warps,
                                 cudaStream_t stream) {
  if (warps == 0) return cudaSuccess;
  constexpr int kThreads = 128;
  DT_LAUNCH(WarpReductionsKernel, CeilBlocks(warps, kThreads / kWarpSize), kThreads, stream, sums,
            maxes, in, warps);
  return cudaGetLastError();
}

cudaError_t LaunchBlockSums(double* out, const double* in, int64_t n, int64_t per_block,
                            int threads, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  DT_LAUNCH(BlockSumsKernel, CeilBlocks(n, per_block), threads, stream, out, in, n, per_block);
  return cudaGetLastError();
}

cudaError_t LaunchColumnSums(float* sums, float* squares, const float* in, int64_t rows, int cols,
                             cudaStream_t stream) {
  if (cols == 0) return cudaSuccess;
  return LaunchColumnSum<2>(SumAndSquares{sums, squares, in, cols}, rows, cols, stream);
}

}  // namespace dstrain::kernels::gpu::testing
