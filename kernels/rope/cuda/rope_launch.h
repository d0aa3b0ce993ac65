// Plain launchers of rope.cu. REQUIRES: sizes > 0, head_dim even, positions within the table,
// valid device pointers. Return cudaGetLastError() after the launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

cudaError_t LaunchRopeTable(float* table, int max_pos, int head_dim, double theta,
                            cudaStream_t stream);

// sin_sign = +1: rotate by +angle (forward); −1: by −angle (backward).
cudaError_t LaunchRopeRotate(float* out, int64_t out_stride, const float* inp, int64_t inp_stride,
                             const float* table, int B, int T, int n_heads, int head_dim,
                             int pos_offset, float sin_sign, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
