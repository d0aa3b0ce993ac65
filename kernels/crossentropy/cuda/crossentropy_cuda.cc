#include "kernels/crossentropy/cuda/crossentropy_cuda.h"

#include "absl/strings/str_cat.h"
#include "kernels/crossentropy/cuda/crossentropy_launch.h"
#include "kernels/cuda_common/cuda_status.h"

namespace dstrain::kernels::gpu {

absl::Status CrossEntropyForwardBackward(float* losses, float* logits, const int32_t* targets,
                                         int64_t N, int V, int Vp, float dlogits_scale,
                                         cudaStream_t stream) {
  if (N < 0 || (N > 0 && (V < 1 || Vp < V)) || N > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("CrossEntropyForwardBackward: N=", N, " V=", V, " Vp=", Vp));
  }
  if (N == 0) return absl::OkStatus();
  if (logits == nullptr || targets == nullptr) {
    return absl::InvalidArgumentError("CrossEntropyForwardBackward: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(
      LaunchCrossEntropyForwardBackward(losses, logits, targets, N, V, Vp, dlogits_scale, stream));
  return absl::OkStatus();
}

}  // namespace dstrain::kernels::gpu
