// Plain launchers of adamw.cu and the per-call scalars they take. REQUIRES: n > 0, valid device
// pointers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

// Derived from AdamWArgs in double, rounded to float once (adamw_cuda.cc).
struct AdamWConsts {
  float grad_scale;
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float weight_decay;  // added to the gradient in Adam (L2) mode
  float decay_scale;   // 1 − lr·weight_decay, applied to the parameter in AdamW mode
  float step_size;     // lr / bias_correction1
  float bc2_sqrt;      // sqrt(bias_correction2)
  float eps;
  bool decoupled;  // AdamW mode
};

cudaError_t LaunchAdamW(float* param, const float* grad, float* m, float* v, int64_t n,
                        const AdamWConsts& k, cudaStream_t stream);

// Grad = float or __nv_bfloat16 (instantiated in adamw.cu).
// Half: __nv_bfloat16 or __half (the 16-bit working copy); Grad: float or Half.
template <typename Half, typename Grad>
cudaError_t LaunchAdamWMixed(Half* param16, float* master, const Grad* grad, float* m, float* v,
                             int64_t n, const AdamWConsts& k, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
