// Layer normalisation on the GPU (CUDA); same math and contracts as kernels/layernorm/layernorm.h
// (torch.nn.LayerNorm: biased variance, eps 1e-5, corrected two-pass mean/variance):
//   forward:  out = (x − mean)·rstd·weight + bias; mean and rstd stored per row (may be null)
//   backward: dinp += rstd·(g − mean_c(g) − n·mean_c(g·n)), n = (x − mean)·rstd, g = dout·weight
//             dweight += Σ_rows dout·n;  dbias += Σ_rows dout                  (all ACCUMULATE)
//
// Kernels: one warp per row for the row-wise work (forward, dinp); dweight/dbias by a column
// reduction (reduce.cuh, one block per 32 columns, rows summed in a fixed order). Deterministic:
// bitwise identical run to run; agrees with the CPU kernel to rounding.
//
// Device pointers; enqueued on `stream`, not waited for. Errors: kInvalidArgument for negative
// sizes or null required pointers when there is work; CUDA failures via CudaToStatus.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace dstrain::kernels::gpu {

absl::Status LayerNormForward(float* out,           // (N, C)
                              float* mean,          // (N) or null
                              float* rstd,          // (N) or null
                              const float* inp,     // (N, C)
                              const float* weight,  // (C)
                              const float* bias,    // (C)
                              int64_t N, int C, cudaStream_t stream);

absl::Status LayerNormBackward(float* dinp,          // (N, C) accumulated
                               float* dweight,       // (C) accumulated
                               float* dbias,         // (C) accumulated
                               const float* dout,    // (N, C)
                               const float* inp,     // (N, C)
                               const float* weight,  // (C)
                               const float* mean,    // (N) from LayerNormForward
                               const float* rstd,    // (N) from LayerNormForward
                               int64_t N, int C, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
