#include "kernels/precision/cuda/precision_cuda.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda_common/cuda_status.h"
#include "kernels/precision/cuda/precision_launch.h"

namespace dstrain::kernels::gpu {
namespace {

template <typename T>
absl::Status Unscale(T* grads, int64_t n, float inv_scale, int* found_nonfinite,
                     cudaStream_t stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("UnscaleAndCheckFinite: n = ", n));
  if (n == 0) return absl::OkStatus();
  if (grads == nullptr || found_nonfinite == nullptr) {
    return absl::InvalidArgumentError("UnscaleAndCheckFinite: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(
      LaunchUnscaleAndCheckFinite(grads, n, inv_scale, found_nonfinite, stream));
  return absl::OkStatus();
}

}  // namespace

absl::Status UnscaleAndCheckFinite(float* grads, int64_t n, float inv_scale, int* found_nonfinite,
                                   cudaStream_t stream) {
  return Unscale(grads, n, inv_scale, found_nonfinite, stream);
}

absl::Status UnscaleAndCheckFinite(__nv_bfloat16* grads, int64_t n, float inv_scale,
                                   int* found_nonfinite, cudaStream_t stream) {
  return Unscale(grads, n, inv_scale, found_nonfinite, stream);
}

absl::Status UnscaleAndCheckFinite(__half* grads, int64_t n, float inv_scale, int* found_nonfinite,
                                   cudaStream_t stream) {
  return Unscale(grads, n, inv_scale, found_nonfinite, stream);
}

}  // namespace dstrain::kernels::gpu
