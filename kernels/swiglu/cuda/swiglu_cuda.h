// SwiGLU on the GPU (CUDA); same math, layout and contracts as kernels/swiglu/swiglu.h:
//   inp (N, 2I) = [gate | up] per row (the fused gate/up GEMM's output), out (N, I):
//   out = silu(g)·u,   silu(g) = g·σ(g)
//   backward: d up = dout·silu(g),  d gate = dout·u·s·(1 + g·(e·s)),  s = σ(g), e = exp(−g)
// exp's argument is capped at 80 so that e stays finite for very negative g (e·s is then ~1 and
// silu(g), silu'(g) ~0, as they should be). fp32 only.
//
// Contracts: SwiGluForward overwrites `out` (no overlap with inp); SwiGluBackward OVERWRITES dinp
// (N, 2I) with [d gate | d up] and may alias inp exactly. Element-wise (grid-stride loop):
// deterministic. Device pointers; enqueued on `stream`, not waited for. Errors: kInvalidArgument
// for negative sizes or null pointers with work to do; CUDA failures via CudaToStatus.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace dstrain::kernels::gpu {

absl::Status SwiGluForward(float* out,        // (N, I)
                           const float* inp,  // (N, 2I): [gate | up]
                           int64_t N, int I, cudaStream_t stream);

absl::Status SwiGluBackward(float* dinp,        // (N, 2I) overwritten: [d gate | d up]
                            const float* inp,   // (N, 2I)
                            const float* dout,  // (N, I)
                            int64_t N, int I, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
