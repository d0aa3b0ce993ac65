// Plain launchers of precision.cu. REQUIRES: n > 0, valid device pointers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

template <typename T>  // float, __nv_bfloat16, __half (instantiated in precision.cu)
cudaError_t LaunchUnscaleAndCheckFinite(T* grads, int64_t n, float inv_scale, int* found_nonfinite,
                                        cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
