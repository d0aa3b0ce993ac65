// Element-wise kernels on flat fp32 device arrays, on the GPU (CUDA); same contracts as
// kernels/residual/residual.h: the residual add, in-place accumulation and scaling, fill, and a
// deterministic sum of squares for gradient norms.
//
// Contracts: ResidualForward overwrites `out` (which may alias `a` or `b`); AddInPlace
// accumulates into `y`; Scale and Fill overwrite in place; AddSumSquares ACCUMULATES into one
// device double (so one zeroed scalar can collect the squared norm of many tensors before a
// single device-to-host copy). All exact IEEE fp32 except AddSumSquares, which squares and adds in
// double: per-thread sums over a grid-stride loop, a block tree per block, then one block adds the
// (at most 1024) block partials in a fixed tree. The launch shape depends only on n, so the result
// is bitwise reproducible run to run (not bitwise equal to the CPU's, whose blocks differ; both
// are within ~1e-15 relative of the exact sum).
//
// Device pointers; enqueued on `stream`, not waited for. AddSumSquares takes 8 KiB of scratch from
// the stream-ordered allocator (cudaMallocAsync) per call. Errors: kInvalidArgument for n < 0 or
// null pointers with n > 0; CUDA failures via CudaToStatus.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace dstrain::kernels::gpu {

// out = a + b.
absl::Status ResidualForward(float* out,      // (n)
                             const float* a,  // (n)
                             const float* b,  // (n)
                             int64_t n, cudaStream_t stream);

// y += x.
absl::Status AddInPlace(float* y,        // (n)
                        const float* x,  // (n)
                        int64_t n, cudaStream_t stream);

// x *= s.
absl::Status Scale(float* x,  // (n)
                   int64_t n, float s, cudaStream_t stream);

// x = v.
absl::Status Fill(float* x,  // (n)
                  int64_t n, float v, cudaStream_t stream);

// *total += Σ x² (in double). `total` is one device double.
absl::Status AddSumSquares(double* total,   // (1) accumulated
                           const float* x,  // (n)
                           int64_t n, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
