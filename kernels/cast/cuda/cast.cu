// Cast kernels: one grid-stride template per (input, output) type pair.
#include "kernels/cast/cuda/cast_launch.h"
#include "kernels/cuda_common/device_common.cuh"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kThreads = 256;

template <typename In, typename Out>
__global__ void CastKernel(Out* out, const In* in, int64_t n) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    out[i] = FromFloat<Out>(ToFloat(in[i]));
  }
}

template <typename In, typename Out>
cudaError_t Launch(void* out, const void* in, int64_t n, cudaStream_t stream) {
  auto* kernel = CastKernel<In, Out>;
  DT_LAUNCH(kernel, GridStrideBlocks(n, kThreads), kThreads, stream, static_cast<Out*>(out),
            static_cast<const In*>(in), n);
  return cudaGetLastError();
}

template <typename T>
__global__ void AccumulateKernel(T* acc, const float* x, int64_t n) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    acc[i] = FromFloat<T>(ToFloat(acc[i]) + x[i]);
  }
}

template <typename T>
__global__ void FillKernel(T* x, float value, int64_t n) {
  const T v = FromFloat<T>(value);
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) x[i] = v;
}

template <typename T>
cudaError_t LaunchAccumulate(void* acc, const float* x, int64_t n, cudaStream_t stream) {
  auto* kernel = AccumulateKernel<T>;
  DT_LAUNCH(kernel, GridStrideBlocks(n, kThreads), kThreads, stream, static_cast<T*>(acc), x, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchFillT(void* x, float value, int64_t n, cudaStream_t stream) {
  auto* kernel = FillKernel<T>;
  DT_LAUNCH(kernel, GridStrideBlocks(n, kThreads), kThreads, stream, static_cast<T*>(x), value, n);
  return cudaGetLastError();
}

template <typename In>
cudaError_t LaunchFrom(void* out, DType out_type, const void* in, int64_t n, cudaStream_t stream) {
  switch (out_type) {
    case DType::kF32:
      return Launch<In, float>(out, in, n, stream);
    case DType::kBF16:
      return Launch<In, __nv_bfloat16>(out, in, n, stream);
    case DType::kF16:
      return Launch<In, __half>(out, in, n, stream);
    default:
      break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t LaunchCast(void* out, DType out_type, const void* in, DType in_type, int64_t n,
                       cudaStream_t stream) {
  switch (in_type) {
    case DType::kF32:
      return LaunchFrom<float>(out, out_type, in, n, stream);
    case DType::kBF16:
      return LaunchFrom<__nv_bfloat16>(out, out_type, in, n, stream);
    case DType::kF16:
      return LaunchFrom<__half>(out, out_type, in, n, stream);
    default:
      break;
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchAccumulateInto(void* acc, DType acc_type, const float* x, int64_t n,
                                 cudaStream_t stream) {
  switch (acc_type) {
    case DType::kBF16:
      return LaunchAccumulate<__nv_bfloat16>(acc, x, n, stream);
    case DType::kF16:
      return LaunchAccumulate<__half>(acc, x, n, stream);
    default:
      break;
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchFill(void* x, DType type, float value, int64_t n, cudaStream_t stream) {
  switch (type) {
    case DType::kF32:
      return LaunchFillT<float>(x, value, n, stream);
    case DType::kBF16:
      return LaunchFillT<__nv_bfloat16>(x, value, n, stream);
    case DType::kF16:
      return LaunchFillT<__half>(x, value, n, stream);
    default:
      break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace dstrain::kernels::gpu
