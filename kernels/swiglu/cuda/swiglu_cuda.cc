#include "kernels/swiglu/cuda/swiglu_cuda.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda_common/cuda_status.h"
#include "kernels/swiglu/cuda/swiglu_launch.h"

namespace dstrain::kernels::gpu {

absl::Status SwiGluForward(float* out, const float* inp, int64_t N, int I, cudaStream_t stream) {
  if (N < 0 || I < 0) {
    return absl::InvalidArgumentError(absl::StrCat("SwiGluForward: N=", N, " I=", I));
  }
  if (N == 0 || I == 0) return absl::OkStatus();
  if (out == nullptr || inp == nullptr) {
    return absl::InvalidArgumentError("SwiGluForward: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchSwiGluForward(out, inp, N, I, stream));
  return absl::OkStatus();
}

absl::Status SwiGluBackward(float* dinp, const float* inp, const float* dout, int64_t N, int I,
                            cudaStream_t stream) {
  if (N < 0 || I < 0) {
    return absl::InvalidArgumentError(absl::StrCat("SwiGluBackward: N=", N, " I=", I));
  }
  if (N == 0 || I == 0) return absl::OkStatus();
  if (dinp == nullptr || inp == nullptr || dout == nullptr) {
    return absl::InvalidArgumentError("SwiGluBackward: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchSwiGluBackward(dinp, inp, dout, N, I, stream));
  return absl::OkStatus();
}

}  // namespace dstrain::kernels::gpu
