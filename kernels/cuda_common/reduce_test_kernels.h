// Test-only launchers that exercise reduce.cuh (see reduce_test.cc).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu::testing {

// sums[w] = sum, maxes[w] = max of in[32 w .. 32 w + 31], by WarpReduceSum / WarpReduceMax.
cudaError_t LaunchWarpReductions(float* sums, float* maxes, const float* in, int warps,
                                 cudaStream_t stream);

// out[b] = sum of in[b * per_block .. min(n, (b + 1) * per_block)) by BlockReduceSum<double> with
// `threads` threads per block (a multiple of 32, at most 1024), one block per chunk.
cudaError_t LaunchBlockSums(double* out, const double* in, int64_t n, int64_t per_block,
                            int threads, cudaStream_t stream);

// sums[c] += sum_r in[r, c], squares[c] += sum_r in[r, c]^2 by LaunchColumnSum<2>.
cudaError_t LaunchColumnSums(float* sums, float* squares, const float* in, int64_t rows, int cols,
                             cudaStream_t stream);

}  // namespace dstrain::kernels::gpu::testing
