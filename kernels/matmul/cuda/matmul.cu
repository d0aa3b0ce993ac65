// Bias broadcast and bias gradient for the cuBLAS linear layer.
#include "kernels/cuda_common/device_common.cuh"
#include "kernels/cuda_common/reduce.cuh"
#include "kernels/matmul/cuda/matmul_launch.h"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void BroadcastBiasKernel(T* out, const float* bias, int64_t M, int N) {
  const int64_t n = M * N;
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    out[i] = FromFloat<T>(bias[i % N]);
  }
}

template <typename T>
struct BiasGrad {
  float* dbias;
  const T* dout;
  int N;
  __device__ void Load(int64_t row, int col, float (&v)[1]) const {
    v[0] = ToFloat(dout[row * N + col]);
  }
  __device__ void Store(int col, const float (&sum)[1]) const { dbias[col] += sum[0]; }
};

}  // namespace

template <typename T>
cudaError_t LaunchBroadcastBias(T* out, const float* bias, int64_t M, int N, cudaStream_t stream) {
  auto* kernel = BroadcastBiasKernel<T>;
  DT_LAUNCH(kernel, GridStrideBlocks(M * N, kThreads), kThreads, stream, out, bias, M, N);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchAddBiasGrad(float* dbias, const T* dout, int64_t M, int N, cudaStream_t stream) {
  return LaunchColumnSum<1>(BiasGrad<T>{dbias, dout, N}, M, N, stream);
}

template cudaError_t LaunchBroadcastBias<float>(float*, const float*, int64_t, int, cudaStream_t);
template cudaError_t LaunchBroadcastBias<__nv_bfloat16>(__nv_bfloat16*, const float*, int64_t, int,
                                                        cudaStream_t);
template cudaError_t LaunchAddBiasGrad<float>(float*, const float*, int64_t, int, cudaStream_t);
template cudaError_t LaunchAddBiasGrad<__nv_bfloat16>(float*, const __nv_bfloat16*, int64_t, int,
                                                      cudaStream_t);

}  // namespace dstrain::kernels::gpu
