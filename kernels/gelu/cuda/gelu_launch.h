// Plain launchers of gelu.cu. REQUIRES: n > 0, valid device pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

cudaError_t LaunchGeluForward(float* out, const float* inp, int64_t n, cudaStream_t stream);
cudaError_t LaunchGeluBackward(float* dinp, const float* inp, const float* dout, int64_t n,
                               cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
