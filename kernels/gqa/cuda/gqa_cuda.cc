#include "kernels/gqa/cuda/gqa_cuda.h"

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "kernels/attention/cuda/attention_cuda.h"
#include "kernels/cuda_common/cuda_status.h"
#include "kernels/cuda_common/device_scratch.h"
#include "kernels/gqa/cuda/gqa_launch.h"

namespace dstrain::kernels::gpu {
namespace {

absl::Status CheckShape(const char* op, int B, int T, int NH, int NKV, int HS) {
  if (B < 0 || T < 0 || NH <= 0 || NKV <= 0 || NH % NKV != 0 || HS <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": need B, T >= 0, NH, NKV, HS > 0 and NKV dividing NH; got B=", B,
                     " T=", T, " NH=", NH, " NKV=", NKV, " HS=", HS));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status GqaForward(const CublasContext& ctx, float* out, float* att, const float* qkv, int B,
                        int T, int NH, int NKV, int HS) {
  DT_RETURN_IF_ERROR(CheckShape("GqaForward", B, T, NH, NKV, HS));
  const int64_t rows = int64_t{B} * T;
  if (rows == 0) return absl::OkStatus();
  if (out == nullptr || att == nullptr || qkv == nullptr) {
    return absl::InvalidArgumentError("GqaForward: null pointer");
  }
  const int C = NH * HS;
  if (NKV == NH) return AttentionForward(ctx, out, att, qkv, B, T, C, NH);
  DT_ASSIGN_OR_RETURN(DeviceScratch expanded,
                      DeviceScratch::Allocate(rows * 3 * C * sizeof(float), ctx.stream()));
  DT_CUDA_RETURN_IF_ERROR(
      LaunchGqaExpand(expanded.As<float>(), qkv, rows, NH, NKV, HS, ctx.stream()));
  return AttentionForward(ctx, out, att, expanded.As<float>(), B, T, C, NH);
}

absl::Status GqaBackward(const CublasContext& ctx, float* dqkv, const float* dout, const float* qkv,
                         const float* att, int B, int T, int NH, int NKV, int HS) {
  DT_RETURN_IF_ERROR(CheckShape("GqaBackward", B, T, NH, NKV, HS));
  const int64_t rows = int64_t{B} * T;
  if (rows == 0) return absl::OkStatus();
  if (dqkv == nullptr || dout == nullptr || qkv == nullptr || att == nullptr) {
    return absl::InvalidArgumentError("GqaBackward: null pointer");
  }
  const int C = NH * HS;
  if (NKV == NH) return AttentionBackward(ctx, dqkv, dout, qkv, att, B, T, C, NH);
  const int64_t n = rows * 3 * C;
  DT_ASSIGN_OR_RETURN(DeviceScratch scratch,
                      DeviceScratch::Allocate(2 * n * sizeof(float), ctx.stream()));
  float* expanded = scratch.As<float>(0);
  float* dexpanded = scratch.As<float>(n);
  DT_CUDA_RETURN_IF_ERROR(LaunchGqaExpand(expanded, qkv, rows, NH, NKV, HS, ctx.stream()));
  DT_RETURN_IF_ERROR(AttentionBackward(ctx, dexpanded, dout, expanded, att, B, T, C, NH));
  DT_CUDA_RETURN_IF_ERROR(LaunchGqaReduce(dqkv, dexpanded, rows, NH, NKV, HS, ctx.stream()));
  return absl::OkStatus();
}

}  // namespace dstrain::kernels::gpu
