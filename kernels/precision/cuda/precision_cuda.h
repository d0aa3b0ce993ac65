// Mixed-precision helpers on the GPU (CUDA): the fused unscale + overflow check of dynamic loss
// scaling (DeepSpeed's `_has_inf_or_nan` + unscale, in one pass over the gradients).
//
//   grads[i] = grads[i] · inv_scale                       (in place, rounded to the grad type)
//   *found_nonfinite = 1 if any result is NaN or ±inf     (never cleared here)
//
// The flag is only ever set, so one zeroed device int can collect the check over every gradient
// tensor of a step before one device-to-host copy decides whether to skip the step. Each thread
// writes it at most once, only on a non-finite value (a benign race: every writer stores 1).
// Element-wise over a grid-stride loop: deterministic.
//
// Device pointers; enqueued on `stream`, not waited for. Errors: kInvalidArgument for n < 0 or
// null pointers with n > 0; CUDA failures via CudaToStatus.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace dstrain::kernels::gpu {

absl::Status UnscaleAndCheckFinite(float* grads,  // (n) in place
                                   int64_t n, float inv_scale,
                                   int* found_nonfinite,  // (1) set to 1, never cleared
                                   cudaStream_t stream);

absl::Status UnscaleAndCheckFinite(__nv_bfloat16* grads, int64_t n, float inv_scale,
                                   int* found_nonfinite, cudaStream_t stream);

absl::Status UnscaleAndCheckFinite(__half* grads, int64_t n, float inv_scale, int* found_nonfinite,
                                   cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
