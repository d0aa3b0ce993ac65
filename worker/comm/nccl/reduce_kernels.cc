#include "worker/comm/nccl/reduce_kernels.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda_common/cuda_status.h"
#include "worker/comm/nccl/reduce_kernels_launch.h"

namespace dstrain::comm::nccl_internal {
namespace {

absl::Status CheckArgs(const char* op, const void* out, const void* in, int64_t n) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat(op, ": n = ", n));
  if (n > 0 && (out == nullptr || in == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": null pointer"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ToMaxKeys(uint32_t* out, const void* in, DType in_type, int64_t n,
                       cudaStream_t stream) {
  if (absl::Status s = CheckArgs("ToMaxKeys", out, in, n); !s.ok() || n == 0) return s;
  DT_CUDA_RETURN_IF_ERROR(LaunchToMaxKeys(out, in, in_type, n, stream));
  return absl::OkStatus();
}

absl::Status FromMaxKeys(void* out, DType out_type, const uint32_t* in, int64_t n,
                         cudaStream_t stream) {
  if (absl::Status s = CheckArgs("FromMaxKeys", out, in, n); !s.ok() || n == 0) return s;
  DT_CUDA_RETURN_IF_ERROR(LaunchFromMaxKeys(out, out_type, in, n, stream));
  return absl::OkStatus();
}

absl::Status DivideAndNarrow(void* out, DType out_type, const float* in, int64_t n, float divisor,
                             cudaStream_t stream) {
  if (absl::Status s = CheckArgs("DivideAndNarrow", out, in, n); !s.ok() || n == 0) return s;
  if (!(divisor > 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("DivideAndNarrow: divisor = ", divisor));
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchDivideAndNarrow(out, out_type, in, n, divisor, stream));
  return absl::OkStatus();
}

}  // namespace dstrain::comm::nccl_internal
