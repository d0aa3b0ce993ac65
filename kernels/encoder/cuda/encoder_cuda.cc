#include "kernels/encoder/cuda/encoder_cuda.h"

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "kernels/cuda_common/cuda_status.h"
#include "kernels/encoder/cuda/encoder_launch.h"

namespace dstrain::kernels::gpu {
namespace {

absl::Status CheckShape(int B, int T, int C) {
  if (B < 0 || T < 0 || C < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("encoder: negative shape B=", B, " T=", T, " C=", C));
  }
  return absl::OkStatus();
}

template <typename W>
absl::Status Forward(float* out, const int32_t* tokens, const W* wte, const float* wpe, int B,
                     int T, int C, cudaStream_t stream) {
  DT_RETURN_IF_ERROR(CheckShape(B, T, C));
  if (int64_t{B} * T * C == 0) return absl::OkStatus();
  if (out == nullptr || tokens == nullptr || wte == nullptr || wpe == nullptr) {
    return absl::InvalidArgumentError("EncoderForward: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchEncoderForward(out, tokens, wte, wpe, B, T, C, stream));
  return absl::OkStatus();
}

}  // namespace

absl::Status EncoderForward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                            int B, int T, int C, cudaStream_t stream) {
  return Forward(out, tokens, wte, wpe, B, T, C, stream);
}

absl::Status EncoderForwardBf16(float* out, const int32_t* tokens, const __nv_bfloat16* wte,
                                const float* wpe, int B, int T, int C, cudaStream_t stream) {
  return Forward(out, tokens, wte, wpe, B, T, C, stream);
}

absl::Status EncoderBackward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                             int B, int T, int C, cudaStream_t stream) {
  DT_RETURN_IF_ERROR(CheckShape(B, T, C));
  if (int64_t{B} * T * C == 0) return absl::OkStatus();
  if (dwte == nullptr || dwpe == nullptr || dout == nullptr || tokens == nullptr) {
    return absl::InvalidArgumentError("EncoderBackward: null pointer");
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchEncoderBackward(dwte, dwpe, dout, tokens, B, T, C, stream));
  return absl::OkStatus();
}

}  // namespace dstrain::kernels::gpu
