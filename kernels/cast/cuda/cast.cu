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

}  // namespace dstrain::kernels::gpu
