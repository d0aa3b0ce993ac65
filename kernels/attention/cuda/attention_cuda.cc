#include "kernels/attention/cuda/attention_cuda.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "kernels/attention/cuda/attention_launch.h"
#include "kernels/cuda_common/cuda_status.h"
#include "kernels/cuda_common/device_scratch.h"

namespace dstrain::kernels::gpu {
namespace {

constexpr DType kF32 = DType::kF32;

absl::Status CheckShape(const char* op, int B, int T, int C, int NH) {
  if (B < 0 || T < 0 || C < 0 || NH <= 0 || C % NH != 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": need B, T, C >= 0 and NH > 0 dividing C;",
                                                   " got B=", B, " T=", T, " C=", C, " NH=", NH));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status AttentionForward(const CublasContext& ctx, float* out, float* att, const float* qkv,
                              int B, int T, int C, int NH) {
  DT_RETURN_IF_ERROR(CheckShape("AttentionForward", B, T, C, NH));
  if (int64_t{B} * T * C == 0) return absl::OkStatus();
  if (out == nullptr || att == nullptr || qkv == nullptr) {
    return absl::InvalidArgumentError("AttentionForward: null pointer");
  }
  const int HS = C / NH;
  const int64_t BNH = int64_t{B} * NH, THS = int64_t{T} * HS, TT = int64_t{T} * T;
  const int64_t btc = int64_t{B} * T * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  cudaStream_t stream = ctx.stream();

  DT_ASSIGN_OR_RETURN(DeviceScratch scratch,
                      DeviceScratch::Allocate(4 * btc * sizeof(float), stream));
  float* q = scratch.As<float>(0);
  float* k = scratch.As<float>(btc);
  float* v = scratch.As<float>(2 * btc);
  float* y = scratch.As<float>(3 * btc);
  DT_CUDA_RETURN_IF_ERROR(LaunchToHeads(q, qkv, 3 * C, B, T, NH, HS, stream));
  DT_CUDA_RETURN_IF_ERROR(LaunchToHeads(k, qkv + C, 3 * C, B, T, NH, HS, stream));
  DT_CUDA_RETURN_IF_ERROR(LaunchToHeads(v, qkv + 2 * C, 3 * C, B, T, NH, HS, stream));
  // att (T, T) = scale · q (T, HS) · k (T, HS)ᵀ, per head
  DT_RETURN_IF_ERROR(GemmRowMajor(ctx, false, true, T, T, HS, scale, q, HS, THS, k, HS, THS, kF32,
                                  0.0f, att, T, TT, kF32, BNH));
  DT_CUDA_RETURN_IF_ERROR(LaunchCausalSoftmaxForward(att, BNH * T, T, stream));
  // y (T, HS) = att (T, T) · v (T, HS)
  DT_RETURN_IF_ERROR(GemmRowMajor(ctx, false, false, T, HS, T, 1.0f, att, T, TT, v, HS, THS, kF32,
                                  0.0f, y, HS, THS, kF32, BNH));
  DT_CUDA_RETURN_IF_ERROR(LaunchFromHeads(out, C, y, B, T, NH, HS, stream));
  return absl::OkStatus();
}

absl::Status AttentionBackward(const CublasContext& ctx, float* dqkv, const float* dout,
                               const float* qkv, const float* att, int B, int T, int C, int NH) {
  DT_RETURN_IF_ERROR(CheckShape("AttentionBackward", B, T, C, NH));
  if (int64_t{B} * T * C == 0) return absl::OkStatus();
  if (dqkv == nullptr || dout == nullptr || qkv == nullptr || att == nullptr) {
    return absl::InvalidArgumentError("AttentionBackward: null pointer");
  }
  const int HS = C / NH;
  const int64_t BNH = int64_t{B} * NH, THS = int64_t{T} * HS, TT = int64_t{T} * T;
  const int64_t btc = int64_t{B} * T * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  cudaStream_t stream = ctx.stream();

  DT_ASSIGN_OR_RETURN(DeviceScratch scratch,
                      DeviceScratch::Allocate((7 * btc + BNH * TT) * sizeof(float), stream));
  float* q = scratch.As<float>(0);
  float* k = scratch.As<float>(btc);
  float* v = scratch.As<float>(2 * btc);
  float* dy = scratch.As<float>(3 * btc);
  float* dq = scratch.As<float>(4 * btc);
  float* dk = scratch.As<float>(5 * btc);
  float* dv = scratch.As<float>(6 * btc);
  float* datt = scratch.As<float>(7 * btc);
  DT_CUDA_RETURN_IF_ERROR(LaunchToHeads(q, qkv, 3 * C, B, T, NH, HS, stream));
  DT_CUDA_RETURN_IF_ERROR(LaunchToHeads(k, qkv + C, 3 * C, B, T, NH, HS, stream));
  DT_CUDA_RETURN_IF_ERROR(LaunchToHeads(v, qkv + 2 * C, 3 * C, B, T, NH, HS, stream));
  DT_CUDA_RETURN_IF_ERROR(LaunchToHeads(dy, dout, C, B, T, NH, HS, stream));
  // datt (T, T) = dy (T, HS) · v (T, HS)ᵀ
  DT_RETURN_IF_ERROR(GemmRowMajor(ctx, false, true, T, T, HS, 1.0f, dy, HS, THS, v, HS, THS, kF32,
                                  0.0f, datt, T, TT, kF32, BNH));
  // dv (T, HS) = att (T, T)ᵀ · dy (T, HS)
  DT_RETURN_IF_ERROR(GemmRowMajor(ctx, true, false, T, HS, T, 1.0f, att, T, TT, dy, HS, THS, kF32,
                                  0.0f, dv, HS, THS, kF32, BNH));
  // datt -> d(scores), in place
  DT_CUDA_RETURN_IF_ERROR(LaunchCausalSoftmaxBackward(datt, att, BNH * T, T, stream));
  // dq (T, HS) = scale · dscores (T, T) · k (T, HS);  dk (T, HS) = scale · dscoresᵀ · q
  DT_RETURN_IF_ERROR(GemmRowMajor(ctx, false, false, T, HS, T, scale, datt, T, TT, k, HS, THS, kF32,
                                  0.0f, dq, HS, THS, kF32, BNH));
  DT_RETURN_IF_ERROR(GemmRowMajor(ctx, true, false, T, HS, T, scale, datt, T, TT, q, HS, THS, kF32,
                                  0.0f, dk, HS, THS, kF32, BNH));
  DT_CUDA_RETURN_IF_ERROR(LaunchFromHeads(dqkv, 3 * C, dq, B, T, NH, HS, stream));
  DT_CUDA_RETURN_IF_ERROR(LaunchFromHeads(dqkv + C, 3 * C, dk, B, T, NH, HS, stream));
  DT_CUDA_RETURN_IF_ERROR(LaunchFromHeads(dqkv + 2 * C, 3 * C, dv, B, T, NH, HS, stream));
  return absl::OkStatus();
}

}  // namespace dstrain::kernels::gpu
