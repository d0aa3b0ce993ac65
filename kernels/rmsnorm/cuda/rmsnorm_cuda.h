// RMS normalisation on the GPU (CUDA); same math and contracts as kernels/rmsnorm/rmsnorm.h:
//   forward:  rstd = 1 / sqrt(Σ_c x_c² / C + eps),  out = (x·rstd)·weight; rstd stored per row
//             (may be null)
//   backward: dinp += rstd·(g − n·mean_c(g·n)), n = x·rstd, g = dout·weight
//             dweight += Σ_rows dout·n                                         (both ACCUMULATE)
// fp32 only, as the LayerNorm kernels (see rmsnorm.h, "Precision").
//
// Kernels: one warp per row for the row-wise work (forward, dinp); dweight by a column reduction
// (reduce.cuh, one block per 32 columns, rows summed in a fixed order). Deterministic: bitwise
// identical run to run; agrees with the CPU kernel to rounding. out may alias inp exactly.
//
// Device pointers; enqueued on `stream`, not waited for. Errors: kInvalidArgument for negative
// sizes, C = 0 with rows, eps < 0 or null required pointers when there is work; CUDA failures via
// CudaToStatus.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace dstrain::kernels::gpu {

absl::Status RmsNormForward(float* out,           // (N, C)
                            float* rstd,          // (N) or null
                            const float* inp,     // (N, C)
                            const float* weight,  // (C)
                            int64_t N, int C, float eps, cudaStream_t stream);

absl::Status RmsNormBackward(float* dinp,          // (N, C) accumulated
                             float* dweight,       // (C) accumulated
                             const float* dout,    // (N, C)
                             const float* inp,     // (N, C)
                             const float* weight,  // (C)
                             const float* rstd,    // (N) from RmsNormForward
                             int64_t N, int C, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
