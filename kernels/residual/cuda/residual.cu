// Residual-family kernels: element-wise grid-stride loops, and a two-stage sum of squares.
#include "kernels/cuda_common/device_common.cuh"
#include "kernels/cuda_common/reduce.cuh"
#include "kernels/residual/cuda/residual_launch.h"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxPartials = 1024;  // GridStrideBlocks' default cap

__global__ void ResidualForwardKernel(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) out[i] = a[i] + b[i];
}

__global__ void AddInPlaceKernel(float* y, const float* x, int64_t n) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) y[i] += x[i];
}

__global__ void ScaleKernel(float* x, int64_t n, float s) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) x[i] *= s;
}

__global__ void FillKernel(float* x, int64_t n, float v) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) x[i] = v;
}

// Stage 1: partials[blockIdx.x] = this block's share of Σ x², in double.
__global__ void SumSquaresPartialKernel(double* partials, const float* x, int64_t n) {
  __shared__ double shared[kWarpSize];
  double sum = 0.0;
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    const double v = x[i];
    sum += v * v;
  }
  sum = BlockReduceSum(sum, shared, threadIdx.x % kWarpSize, threadIdx.x / kWarpSize,
                       blockDim.x / kWarpSize);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// Stage 2, one block: *total += Σ partials.
__global__ void SumSquaresFinalKernel(double* total, const double* partials, int count) {
  __shared__ double shared[kWarpSize];
  double sum = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) sum += partials[i];
  sum = BlockReduceSum(sum, shared, threadIdx.x % kWarpSize, threadIdx.x / kWarpSize,
                       blockDim.x / kWarpSize);
  if (threadIdx.x == 0) *total += sum;
}

}  // namespace

cudaError_t LaunchResidualForward(float* out, const float* a, const float* b, int64_t n,
                                  cudaStream_t stream) {
  DT_LAUNCH(ResidualForwardKernel, GridStrideBlocks(n, kThreads), kThreads, stream, out, a, b, n);
  return cudaGetLastError();
}

cudaError_t LaunchAddInPlace(float* y, const float* x, int64_t n, cudaStream_t stream) {
  DT_LAUNCH(AddInPlaceKernel, GridStrideBlocks(n, kThreads), kThreads, stream, y, x, n);
  return cudaGetLastError();
}

cudaError_t LaunchScale(float* x, int64_t n, float s, cudaStream_t stream) {
  DT_LAUNCH(ScaleKernel, GridStrideBlocks(n, kThreads), kThreads, stream, x, n, s);
  return cudaGetLastError();
}

cudaError_t LaunchFill(float* x, int64_t n, float v, cudaStream_t stream) {
  DT_LAUNCH(FillKernel, GridStrideBlocks(n, kThreads), kThreads, stream, x, n, v);
  return cudaGetLastError();
}

cudaError_t LaunchAddSumSquares(double* total, const float* x, int64_t n, cudaStream_t stream) {
  const unsigned blocks = GridStrideBlocks(n, kThreads, kMaxPartials);
  double* partials = nullptr;
  cudaError_t e =
      cudaMallocAsync(reinterpret_cast<void**>(&partials), blocks * sizeof(double), stream);
  if (e != cudaSuccess) return e;
  DT_LAUNCH(SumSquaresPartialKernel, blocks, kThreads, stream, partials, x, n);
  DT_LAUNCH(SumSquaresFinalKernel, 1, kThreads, stream, total, partials, static_cast<int>(blocks));
  e = cudaGetLastError();
  const cudaError_t freed = cudaFreeAsync(partials, stream);
  return e != cudaSuccess ? e : freed;
}

}  // namespace dstrain::kernels::gpu
