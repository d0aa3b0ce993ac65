// Element-wise kernels for NCCL reductions: max keys and the average's division. One grid-stride
// template per storage type.
#include "kernels/cuda_common/device_common.cuh"
#include "worker/comm/nccl/reduce_kernels_launch.h"

namespace dstrain::comm::nccl_internal {
namespace {

using kernels::gpu::FromFloat;
using kernels::gpu::GridStrideBegin;
using kernels::gpu::GridStrideBlocks;
using kernels::gpu::GridStrideStep;
using kernels::gpu::ToFloat;

constexpr int kThreads = 256;
constexpr uint32_t kSignBit = 0x80000000u;
constexpr uint32_t kCanonicalNan = 0x7fc00000u;

__device__ __forceinline__ uint32_t KeyOf(float x) {
  uint32_t bits = __float_as_uint(x);
  if ((bits & 0x7fffffffu) > 0x7f800000u) bits = kCanonicalNan;
  return (bits & kSignBit) != 0 ? ~bits : (bits | kSignBit);
}

__device__ __forceinline__ float FloatOf(uint32_t key) {
  return __uint_as_float((key & kSignBit) != 0 ? (key & ~kSignBit) : ~key);
}

template <typename In>
__global__ void ToMaxKeysKernel(uint32_t* out, const In* in, int64_t n) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    out[i] = KeyOf(ToFloat(in[i]));
  }
}

template <typename Out>
__global__ void FromMaxKeysKernel(Out* out, const uint32_t* in, int64_t n) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    out[i] = FromFloat<Out>(FloatOf(in[i]));
  }
}

template <typename Out>
__global__ void DivideAndNarrowKernel(Out* out, const float* in, int64_t n, float divisor) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    out[i] = FromFloat<Out>(in[i] / divisor);
  }
}

template <typename In>
cudaError_t ToKeys(uint32_t* out, const void* in, int64_t n, cudaStream_t stream) {
  auto* kernel = ToMaxKeysKernel<In>;
  DT_LAUNCH(kernel, GridStrideBlocks(n, kThreads), kThreads, stream, out,
            static_cast<const In*>(in), n);
  return cudaGetLastError();
}

template <typename Out>
cudaError_t FromKeys(void* out, const uint32_t* in, int64_t n, cudaStream_t stream) {
  auto* kernel = FromMaxKeysKernel<Out>;
  DT_LAUNCH(kernel, GridStrideBlocks(n, kThreads), kThreads, stream, static_cast<Out*>(out), in, n);
  return cudaGetLastError();
}

template <typename Out>
cudaError_t Divide(void* out, const float* in, int64_t n, float divisor, cudaStream_t stream) {
  auto* kernel = DivideAndNarrowKernel<Out>;
  DT_LAUNCH(kernel, GridStrideBlocks(n, kThreads), kThreads, stream, static_cast<Out*>(out), in, n,
            divisor);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchToMaxKeys(uint32_t* out, const void* in, DType in_type, int64_t n,
                            cudaStream_t stream) {
  switch (in_type) {
    case DType::kF32:
      return ToKeys<float>(out, in, n, stream);
    case DType::kBF16:
      return ToKeys<__nv_bfloat16>(out, in, n, stream);
    case DType::kF16:
      return ToKeys<__half>(out, in, n, stream);
    default:
      break;
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchFromMaxKeys(void* out, DType out_type, const uint32_t* in, int64_t n,
                              cudaStream_t stream) {
  switch (out_type) {
    case DType::kF32:
      return FromKeys<float>(out, in, n, stream);
    case DType::kBF16:
      return FromKeys<__nv_bfloat16>(out, in, n, stream);
    case DType::kF16:
      return FromKeys<__half>(out, in, n, stream);
    default:
      break;
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchDivideAndNarrow(void* out, DType out_type, const float* in, int64_t n,
                                  float divisor, cudaStream_t stream) {
  switch (out_type) {
    case DType::kF32:
      return Divide<float>(out, in, n, divisor, stream);
    case DType::kBF16:
      return Divide<__nv_bfloat16>(out, in, n, divisor, stream);
    case DType::kF16:
      return Divide<__half>(out, in, n, divisor, stream);
    default:
      break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace dstrain::comm::nccl_internal
