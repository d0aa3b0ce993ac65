#include "kernels/rope/cuda/rope_cuda.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda_common/cuda_status.h"
#include "kernels/rope/cuda/rope_launch.h"

namespace dstrain::kernels::gpu {
namespace {

absl::Status Rotate(const char* op, float* out, int64_t out_stride, const float* inp,
                    int64_t inp_stride, const float* table, int max_pos, int B, int T, int n_heads,
                    int head_dim, int pos_offset, float sin_sign, cudaStream_t stream) {
  const int64_t width = static_cast<int64_t>(n_heads) * head_dim;
  if (B < 0 || T < 0 || n_heads < 0 || head_dim <= 0 || head_dim % 2 != 0 || pos_offset < 0 ||
      static_cast<int64_t>(pos_offset) + T > max_pos || out_stride < width || inp_stride < width) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": need B, T, n_heads >= 0, head_dim even and > 0, 0 <= pos_offset, ",
                     "pos_offset + T <= max_pos, strides >= n_heads·head_dim; got B=", B, " T=", T,
                     " n_heads=", n_heads, " head_dim=", head_dim, " pos_offset=", pos_offset,
                     " max_pos=", max_pos, " strides ", out_stride, ", ", inp_stride));
  }
  if (int64_t{B} * T * n_heads == 0) return absl::OkStatus();
  if (out == nullptr || inp == nullptr || table == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": null pointer"));
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchRopeRotate(out, out_stride, inp, inp_stride, table, B, T, n_heads,
                                           head_dim, pos_offset, sin_sign, stream));
  return absl::OkStatus();
}

}  // namespace

absl::Status RopeTable(float* table, int max_pos, int head_dim, double theta, cudaStream_t stream) {
  if (max_pos < 0 || head_dim <= 0 || head_dim % 2 != 0 || !(theta > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RopeTable: max_pos=", max_pos, " head_dim=", head_dim, " theta=", theta));
  }
  if (max_pos == 0) return absl::OkStatus();
  if (table == nullptr) return absl::InvalidArgumentError("RopeTable: null pointer");
  DT_CUDA_RETURN_IF_ERROR(LaunchRopeTable(table, max_pos, head_dim, theta, stream));
  return absl::OkStatus();
}

absl::Status RopeForward(float* out, int64_t out_stride, const float* inp, int64_t inp_stride,
                         const float* table, int max_pos, int B, int T, int n_heads, int head_dim,
                         int pos_offset, cudaStream_t stream) {
  return Rotate("RopeForward", out, out_stride, inp, inp_stride, table, max_pos, B, T, n_heads,
                head_dim, pos_offset, 1.0f, stream);
}

absl::Status RopeBackward(float* dinp, int64_t dinp_stride, const float* dout, int64_t dout_stride,
                          const float* table, int max_pos, int B, int T, int n_heads, int head_dim,
                          int pos_offset, cudaStream_t stream) {
  return Rotate("RopeBackward", dinp, dinp_stride, dout, dout_stride, table, max_pos, B, T, n_heads,
                head_dim, pos_offset, -1.0f, stream);
}

}  // namespace dstrain::kernels::gpu
