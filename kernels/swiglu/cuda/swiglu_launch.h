// Plain launchers of swiglu.cu. REQUIRES: N > 0, I > 0, valid device pointers. Return
// cudaGetLastError() after the launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

cudaError_t LaunchSwiGluForward(float* out, const float* inp, int64_t N, int I,
                                cudaStream_t stream);

cudaError_t LaunchSwiGluBackward(float* dinp, const float* inp, const float* dout, int64_t N, int I,
                                 cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
