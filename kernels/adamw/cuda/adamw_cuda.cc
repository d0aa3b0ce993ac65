#include "kernels/adamw/cuda/adamw_cuda.h"

#include <cmath>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "kernels/adamw/cuda/adamw_launch.h"
#include "kernels/cuda_common/cuda_status.h"

namespace dstrain::kernels::gpu {
namespace {

// As the CPU kernel derives them (adamw_cpu.cc): in double, rounded once.
AdamWConsts Derive(const AdamWArgs& a) {
  AdamWConsts k;
  k.grad_scale = static_cast<float>(a.grad_scale);
  k.beta1 = static_cast<float>(a.beta1);
  k.one_minus_beta1 = static_cast<float>(1.0 - a.beta1);
  k.beta2 = static_cast<float>(a.beta2);
  k.one_minus_beta2 = static_cast<float>(1.0 - a.beta2);
  k.weight_decay = static_cast<float>(a.weight_decay);
  k.decay_scale = static_cast<float>(1.0 - a.lr * a.weight_decay);
  k.step_size = static_cast<float>(a.lr / a.bias_correction1);
  k.bc2_sqrt = static_cast<float>(std::sqrt(a.bias_correction2));
  k.eps = static_cast<float>(a.eps);
  k.decoupled = a.adamw_mode;
  return k;
}

// OK to go on when n > 0 and every pointer is set; `done` when there is nothing to do.
absl::Status Check(const char* op, int64_t n, std::initializer_list<const void*> pointers,
                   bool* done) {
  *done = n == 0;
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat(op, ": n = ", n));
  if (n == 0) return absl::OkStatus();
  for (const void* p : pointers) {
    if (p == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": null pointer"));
  }
  return absl::OkStatus();
}

template <typename Half, typename Grad>
absl::Status Mixed(Half* param16, float* master, const Grad* grad, float* m, float* v, int64_t n,
                   const AdamWArgs& args, cudaStream_t stream) {
  bool done;
  if (absl::Status s = Check("AdamWUpdateMixed", n, {param16, master, grad, m, v}, &done);
      !s.ok() || done) {
    return s;
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchAdamWMixed(param16, master, grad, m, v, n, Derive(args), stream));
  return absl::OkStatus();
}

}  // namespace

absl::Status AdamWUpdate(float* param, const float* grad, float* m, float* v, int64_t n,
                         const AdamWArgs& args, cudaStream_t stream) {
  bool done;
  if (absl::Status s = Check("AdamWUpdate", n, {param, grad, m, v}, &done); !s.ok() || done) {
    return s;
  }
  DT_CUDA_RETURN_IF_ERROR(LaunchAdamW(param, grad, m, v, n, Derive(args), stream));
  return absl::OkStatus();
}

absl::Status AdamWUpdateMixed(__nv_bfloat16* param_bf16, float* master, const __nv_bfloat16* grad,
                              float* m, float* v, int64_t n, const AdamWArgs& args,
                              cudaStream_t stream) {
  return Mixed(param_bf16, master, grad, m, v, n, args, stream);
}

absl::Status AdamWUpdateMixed(__nv_bfloat16* param_bf16, float* master, const float* grad, float* m,
                              float* v, int64_t n, const AdamWArgs& args, cudaStream_t stream) {
  return Mixed(param_bf16, master, grad, m, v, n, args, stream);
}

absl::Status AdamWUpdateMixed(__half* param_f16, float* master, const __half* grad, float* m,
                              float* v, int64_t n, const AdamWArgs& args, cudaStream_t stream) {
  return Mixed(param_f16, master, grad, m, v, n, args, stream);
}

absl::Status AdamWUpdateMixed(__half* param_f16, float* master, const float* grad, float* m,
                              float* v, int64_t n, const AdamWArgs& args, cudaStream_t stream) {
  return Mixed(param_f16, master, grad, m, v, n, args, stream);
}

}  // namespace dstrain::kernels::gpu
