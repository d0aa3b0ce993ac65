// Plain launchers of rmsnorm.cu. REQUIRES: N > 0, C > 0, valid device pointers (rstd may be null
// in the forward pass). Return cudaGetLastError() after the launches.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

cudaError_t LaunchRmsNormForward(float* out, float* rstd, const float* inp, const float* weight,
                                 int64_t N, int C, float eps, cudaStream_t stream);

cudaError_t LaunchRmsNormBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                                  const float* weight, const float* rstd, int64_t N, int C,
                                  cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
