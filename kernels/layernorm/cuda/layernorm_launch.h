// Plain launchers of layernorm.cu. REQUIRES: N > 0, C > 0, valid device pointers (mean/rstd may be
// null in the forward pass). Return cudaGetLastError() after the launches.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

cudaError_t LaunchLayerNormForward(float* out, float* mean, float* rstd, const float* inp,
                                   const float* weight, const float* bias, int64_t N, int C,
                                   cudaStream_t stream);

cudaError_t LaunchLayerNormBackward(float* dinp, float* dweight, float* dbias, const float* dout,
                                    const float* inp, const float* weight, const float* mean,
                                    const float* rstd, int64_t N, int C, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
