#include "kernels/layernorm/cuda/layernorm_cuda.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda_common/cuda_status.h"
#include "kernels/layernorm/cuda/layernorm_launch.h"

namespace dstrain::kernels::gpu {

absl::Status LayerNormForward(float* out, float* mean, float* rstd, const float* inp,
                              const float* weight, const float* bias, int64_t N, int C,
                              cudaStream_t stream) {
  if (N < 0 || C < 0) {
    return absl::InvalidArgumentError(absl::StrCat("LayerNormForward: N=", N, " C=", C));
  }
  if (N == 0) return absl::OkStatus();
  if (C == 0) return absl::InvalidArgumentError("LayerNormForward: C = 0 (mean of nothing)");
  if (out == nullptr || inp == nullptr || weight == nullptr || bias == nullptr) {
    return absl::InvalidArgumentError("LayerNormForward: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchLayerNormForward(out, mean, rstd, inp, weight, bias, N, C, stream));
  return absl::OkStatus();
}

absl::Status LayerNormBackward(float* dinp, float* dweight, float* dbias, const float* dout,
                               const float* inp, const float* weight, const float* mean,
                               const float* rstd, int64_t N, int C, cudaStream_t stream) {
  if (N < 0 || C < 0) {
    return absl::InvalidArgumentError(absl::StrCat("LayerNormBackward: N=", N, " C=", C));
  }
  if (N == 0 || C == 0) return absl::OkStatus();
  if (dinp == nullptr || dweight == nullptr || dbias == nullptr || dout == nullptr ||
      inp == nullptr || weight == nullptr || mean == nullptr || rstd == nullptr) {
    return absl::InvalidArgumentError("LayerNormBackward: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(
      LaunchLayerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, stream));
  return absl::OkStatus();
}

}  // namespace dstrain::kernels::gpu
