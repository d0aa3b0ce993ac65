// Plain launchers of gqa.cu. REQUIRES: B·T > 0, NKV > 0 dividing NH, HS > 0, valid device
// pointers. Return cudaGetLastError() after the launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

// expanded (B·T, 3·NH·HS) from qkv (B·T, (NH + 2·NKV)·HS): q copied, kv head h / G into slot h.
cudaError_t LaunchGqaExpand(float* expanded, const float* qkv, int64_t rows, int NH, int NKV,
                            int HS, cudaStream_t stream);

// dqkv (B·T, (NH + 2·NKV)·HS) from dexpanded (B·T, 3·NH·HS): dq copied, dk/dv of kv head j the
// sum over g = 0 .. G−1 (in order) of expanded heads j·G + g.
cudaError_t LaunchGqaReduce(float* dqkv, const float* dexpanded, int64_t rows, int NH, int NKV,
                            int HS, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
