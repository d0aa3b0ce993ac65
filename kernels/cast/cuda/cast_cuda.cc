#include "kernels/cast/cuda/cast_cuda.h"

#include "absl/strings/str_cat.h"
#include "kernels/cast/cuda/cast_launch.h"
#include "kernels/cuda_common/cuda_status.h"

namespace dstrain::kernels::gpu {

absl::Status Cast(void* out, DType out_type, const void* in, DType in_type, int64_t n,
                  cudaStream_t stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("Cast: n = ", n));
  if (n == 0) return absl::OkStatus();
  if (out == nullptr || in == nullptr) return absl::InvalidArgumentError("Cast: null pointer");
  if (out_type == in_type) {
    DT_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(out, in, n * DTypeSize(in_type), cudaMemcpyDeviceToDevice, stream));
    return absl::OkStatus();
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchCast(out, out_type, in, in_type, n, stream));
  return absl::OkStatus();
}

absl::Status CastFloatToBf16(__nv_bfloat16* out, const float* in, int64_t n, cudaStream_t stream) {
  return Cast(out, DType::kBF16, in, DType::kF32, n, stream);
}

absl::Status CastBf16ToFloat(float* out, const __nv_bfloat16* in, int64_t n, cudaStream_t stream) {
  return Cast(out, DType::kF32, in, DType::kBF16, n, stream);
}

absl::Status CastFloatToHalf(__half* out, const float* in, int64_t n, cudaStream_t stream) {
  return Cast(out, DType::kF16, in, DType::kF32, n, stream);
}

absl::Status CastHalfToFloat(float* out, const __half* in, int64_t n, cudaStream_t stream) {
  return Cast(out, DType::kF32, in, DType::kF16, n, stream);
}

absl::Status AccumulateIntoHalf(void* acc, DType acc_type, const float* x, int64_t n,
                                cudaStream_t stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("AccumulateIntoHalf: n = ", n));
  if (!IsHalf(acc_type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("AccumulateIntoHalf: ", DTypeName(acc_type), " accumulator (bf16 or f16)"));
  }
  if (n == 0) return absl::OkStatus();
  if (acc == nullptr || x == nullptr) {
    return absl::InvalidArgumentError("AccumulateIntoHalf: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchAccumulateInto(acc, acc_type, x, n, stream));
  return absl::OkStatus();
}

absl::Status FillTyped(void* x, DType type, float value, int64_t n, cudaStream_t stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("FillTyped: n = ", n));
  if (type != DType::kF32 && !IsHalf(type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("FillTyped: ", DTypeName(type), " (f32, bf16 or f16)"));
  }
  if (n == 0) return absl::OkStatus();
  if (x == nullptr) return absl::InvalidArgumentError("FillTyped: null pointer");
  DT_CUDA_RETURN_IF_ERROR(LaunchFill(x, type, value, n, stream));
  return absl::OkStatus();
}

}  // namespace dstrain::kernels::gpu
