// GELU, tanh approximation (GPT-2), on the GPU (CUDA); same math and contracts as
// kernels/gelu/gelu.h:
//   gelu(x) = 0.5·x·(1 + tanh(u)) = x·σ(2u),  u = √(2/π)·(x + 0.044715·x³)
//   gelu'(x) = σ + 2x·σ(1−σ)·√(2/π)·(1 + 3·0.044715·x²),  σ = σ(2u),  σ(1−σ) = e·σ², e = exp(−2u)
// computed in the sigmoid form (one expf, no cancellation for either sign of u).
//
// Contracts: GeluForward overwrites `out`; GeluBackward OVERWRITES `dinp` with gelu'(inp)·dout.
// Either output may alias `inp` / `dout`. Element-wise (grid-stride loop): deterministic.
// Device pointers; enqueued on `stream`, not waited for. Errors: kInvalidArgument for n < 0 or
// null pointers with n > 0; CUDA failures via CudaToStatus.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace dstrain::kernels::gpu {

absl::Status GeluForward(float* out,        // (n)
                         const float* inp,  // (n)
                         int64_t n, cudaStream_t stream);

absl::Status GeluBackward(float* dinp,        // (n) overwritten
                          const float* inp,   // (n)
                          const float* dout,  // (n)
                          int64_t n, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
