#include "kernels/residual/cuda/residual_cuda.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda_common/cuda_status.h"
#include "kernels/residual/cuda/residual_launch.h"

namespace dstrain::kernels::gpu {
namespace {

// OK to go on when n > 0 and every pointer is set; `done` when there is nothing to do.
absl::Status Check(const char* op, int64_t n, std::initializer_list<const void*> pointers,
                   bool* done) {
  *done = false;
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat(op, ": n = ", n));
  if (n == 0) {
    *done = true;
    return absl::OkStatus();
  }
  for (const void* p : pointers) {
    if (p == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": null pointer"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ResidualForward(float* out, const float* a, const float* b, int64_t n,
                             cudaStream_t stream) {
  bool done;
  if (absl::Status s = Check("ResidualForward", n, {out, a, b}, &done); !s.ok() || done) return s;
  DT_CUDA_RETURN_IF_ERROR(LaunchResidualForward(out, a, b, n, stream));
  return absl::OkStatus();
}

absl::Status AddInPlace(float* y, const float* x, int64_t n, cudaStream_t stream) {
  bool done;
  if (absl::Status s = Check("AddInPlace", n, {y, x}, &done); !s.ok() || done) return s;
  DT_CUDA_RETURN_IF_ERROR(LaunchAddInPlace(y, x, n, stream));
  return absl::OkStatus();
}

absl::Status Scale(float* x, int64_t n, float s, cudaStream_t stream) {
  bool done;
  if (absl::Status st = Check("Scale", n, {x}, &done); !st.ok() || done) return st;
  DT_CUDA_RETURN_IF_ERROR(LaunchScale(x, n, s, stream));
  return absl::OkStatus();
}

absl::Status Fill(float* x, int64_t n, float v, cudaStream_t stream) {
  bool done;
  if (absl::Status s = Check("Fill", n, {x}, &done); !s.ok() || done) return s;
  DT_CUDA_RETURN_IF_ERROR(LaunchFill(x, n, v, stream));
  return absl::OkStatus();
}

absl::Status AddSumSquares(double* total, const float* x, int64_t n, cudaStream_t stream) {
  bool done;
  if (absl::Status s = Check("AddSumSquares", n, {total, x}, &done); !s.ok() || done) return s;
  DT_CUDA_RETURN_IF_ERROR(LaunchAddSumSquares(total, x, n, stream));
  return absl::OkStatus();
}

}  // namespace dstrain::kernels::gpu
