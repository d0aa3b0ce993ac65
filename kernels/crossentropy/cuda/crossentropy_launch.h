// Plain launcher of crossentropy.cu. REQUIRES: N > 0, 1 <= V <= Vp, valid device pointers
// (losses may be null).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

cudaError_t LaunchCrossEntropyForwardBackward(float* losses, float* logits, const int32_t* targets,
                                              int64_t N, int V, int Vp, float dlogits_scale,
                                              cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
