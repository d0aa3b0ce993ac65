// Fused unscale + non-finite check.
#include "kernels/cuda_common/device_common.cuh"
#include "kernels/precision/cuda/precision_launch.h"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void UnscaleAndCheckFiniteKernel(T* grads, int64_t n, float inv_scale,
                                            int* found_nonfinite) {
  bool finite = true;
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    const float v = ToFloat(grads[i]) * inv_scale;
    finite = finite && IsFinite(v);
    grads[i] = FromFloat<T>(v);
  }
  if (!finite) *found_nonfinite = 1;
}

}  // namespace

template <typename T>
cudaError_t LaunchUnscaleAndCheckFinite(T* grads, int64_t n, float inv_scale, int* found_nonfinite,
                                        cudaStream_t stream) {
  auto* kernel = UnscaleAndCheckFiniteKernel<T>;
  DT_LAUNCH(kernel, GridStrideBlocks(n, kThreads), kThreads, stream, grads, n, inv_scale,
            found_nonfinite);
  return cudaGetLastError();
}

template cudaError_t LaunchUnscaleAndCheckFinite<float>(float*, int64_t, float, int*, cudaStream_t);
template cudaError_t LaunchUnscaleAndCheckFinite<__nv_bfloat16>(__nv_bfloat16*, int64_t, float,
                                                                int*, cudaStream_t);
template cudaError_t LaunchUnscaleAndCheckFinite<__half>(__half*, int64_t, float, int*,
                                                         cudaStream_t);

}  // namespace dstrain::kernels::gpu
