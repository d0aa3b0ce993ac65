#include "kernels/gelu/cuda/gelu_cuda.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda_common/cuda_status.h"
#include "kernels/gelu/cuda/gelu_launch.h"

namespace dstrain::kernels::gpu {

absl::Status GeluForward(float* out, const float* inp, int64_t n, cudaStream_t stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("GeluForward: n = ", n));
  if (n == 0) return absl::OkStatus();
  if (out == nullptr || inp == nullptr) {
    return absl::InvalidArgumentError("GeluForward: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchGeluForward(out, inp, n, stream));
  return absl::OkStatus();
}

absl::Status GeluBackward(float* dinp, const float* inp, const float* dout, int64_t n,
                          cudaStream_t stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("GeluBackward: n = ", n));
  if (n == 0) return absl::OkStatus();
  if (dinp == nullptr || inp == nullptr || dout == nullptr) {
    return absl::InvalidArgumentError("GeluBackward: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchGeluBackward(dinp, inp, dout, n, stream));
  return absl::OkStatus();
}

}  // namespace dstrain::kernels::gpu
