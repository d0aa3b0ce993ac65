#include "kernels/rmsnorm/cuda/rmsnorm_cuda.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda_common/cuda_status.h"
#include "kernels/rmsnorm/cuda/rmsnorm_launch.h"

namespace dstrain::kernels::gpu {

absl::Status RmsNormForward(float* out, float* rstd, const float* inp, const float* weight,
                            int64_t N, int C, float eps, cudaStream_t stream) {
  if (N < 0 || C < 0 || !(eps >= 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RmsNormForward: N=", N, " C=", C, " eps=", eps));
  }
  if (N == 0) return absl::OkStatus();
  if (C == 0) return absl::InvalidArgumentError("RmsNormForward: C = 0 (mean of nothing)");
  if (out == nullptr || inp == nullptr || weight == nullptr) {
    return absl::InvalidArgumentError("RmsNormForward: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchRmsNormForward(out, rstd, inp, weight, N, C, eps, stream));
  return absl::OkStatus();
}

absl::Status RmsNormBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                             const float* weight, const float* rstd, int64_t N, int C,
                             cudaStream_t stream) {
  if (N < 0 || C < 0) {
    return absl::InvalidArgumentError(absl::StrCat("RmsNormBackward: N=", N, " C=", C));
  }
  if (N == 0 || C == 0) return absl::OkStatus();
  if (dinp == nullptr || dweight == nullptr || dout == nullptr || inp == nullptr ||
      weight == nullptr || rstd == nullptr) {
    return absl::InvalidArgumentError("RmsNormBackward: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(
      LaunchRmsNormBackward(dinp, dweight, dout, inp, weight, rstd, N, C, stream));
  return absl::OkStatus();
}

}  // namespace dstrain::kernels::gpu
