// Plain launchers of residual.cu. REQUIRES: n > 0, valid device pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

cudaError_t LaunchResidualForward(float* out, const float* a, const float* b, int64_t n,
                                  cudaStream_t stream);
cudaError_t LaunchAddInPlace(float* y, const float* x, int64_t n, cudaStream_t stream);
cudaError_t LaunchScale(float* x, int64_t n, float s, cudaStream_t stream);
cudaError_t LaunchFill(float* x, int64_t n, float v, cudaStream_t stream);
// Allocates and frees its scratch with cudaMallocAsync / cudaFreeAsync on `stream`.
cudaError_t LaunchAddSumSquares(double* total, const float* x, int64_t n, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
