// Plain launchers of encoder.cu (no absl: nvcc compiles the .cu). REQUIRES: B, T, C > 0, valid
// device pointers. Return the launch status (cudaGetLastError()).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

// W: float or __nv_bfloat16.
template <typename W>
cudaError_t LaunchEncoderForward(float* out, const int32_t* tokens, const W* wte, const float* wpe,
                                 int B, int T, int C, cudaStream_t stream);

cudaError_t LaunchEncoderBackward(float* dwte, float* dwpe, const float* dout,
                                  const int32_t* tokens, int B, int T, int C, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
