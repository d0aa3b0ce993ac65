// Fused AdamW / Adam optimizer step on the GPU (CUDA), one pass over memory; same math, argument
// struct and contracts as kernels/adamw/adamw.h (torch.optim.AdamW / Adam order of operations):
//   g = grad · grad_scale;  Adam (L2): g += weight_decay · p
//   m = beta1·m + (1 − beta1)·g;  v = beta2·v + (1 − beta2)·g²
//   AdamW: p = p·(1 − lr·weight_decay);  p −= (lr / bias_correction1) · m / (sqrt(v)/sqrt(bc2) +
//   eps)
// The scalars are derived in double and rounded to float once, and the fused multiply-adds sit
// where the CPU kernel has them, so GPU and CPU agree to about an ulp.
//
// AdamWUpdate: fp32 params, grads and moments, updated in place (grad read only).
// AdamWUpdateMixed: bf16 model weights with an fp32 master copy. The update reads and writes the
// fp32 `master` (never the bf16 copy), then writes `param_bf16` = master rounded to nearest even.
// Gradients may be bf16 or fp32; moments are fp32.
//
// Element-wise (grid-stride loop): deterministic. Device pointers; enqueued on `stream`, not
// waited for. Memory traffic per parameter: 28 bytes (fp32 or mixed with bf16 grads).
// Errors: kInvalidArgument for n < 0 or null pointers with n > 0; CUDA failures via CudaToStatus.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/adamw/adamw.h"

namespace dstrain::kernels::gpu {

absl::Status AdamWUpdate(float* param,       // (n) updated in place
                         const float* grad,  // (n)
                         float* m,           // (n) first moment, updated in place
                         float* v,           // (n) second moment, updated in place
                         int64_t n, const AdamWArgs& args, cudaStream_t stream);

absl::Status AdamWUpdateMixed(__nv_bfloat16* param_bf16,  // (n) overwritten: bf16(master)
                              float* master,              // (n) fp32 weights, updated in place
                              const __nv_bfloat16* grad,  // (n)
                              float* m,                   // (n) updated in place
                              float* v,                   // (n) updated in place
                              int64_t n, const AdamWArgs& args, cudaStream_t stream);

absl::Status AdamWUpdateMixed(__nv_bfloat16* param_bf16,  // (n) overwritten: bf16(master)
                              float* master,              // (n) fp32 weights, updated in place
                              const float* grad,          // (n)
                              float* m,                   // (n) updated in place
                              float* v,                   // (n) updated in place
                              int64_t n, const AdamWArgs& args, cudaStream_t stream);

// The same with an fp16 working copy (fp16 mixed precision).
absl::Status AdamWUpdateMixed(__half* param_f16,   // (n) overwritten: fp16(master)
                              float* master,       // (n) fp32 weights, updated in place
                              const __half* grad,  // (n)
                              float* m,            // (n) updated in place
                              float* v,            // (n) updated in place
                              int64_t n, const AdamWArgs& args, cudaStream_t stream);
absl::Status AdamWUpdateMixed(__half* param_f16,  // (n) overwritten: fp16(master)
                              float* master,      // (n) fp32 weights, updated in place
                              const float* grad,  // (n)
                              float* m,           // (n) updated in place
                              float* v,           // (n) updated in place
                              int64_t n, const AdamWArgs& args, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
