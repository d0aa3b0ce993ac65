// Plain launchers of matmul.cu: the bias parts of the linear layer (the products are cuBLAS).
// T = float or __nv_bfloat16 (instantiated in matmul.cu). REQUIRES: M > 0, N > 0.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dstrain::kernels::gpu {

// out[i, j] = T(bias[j]) for out (M, N).
template <typename T>
cudaError_t LaunchBroadcastBias(T* out, const float* bias, int64_t M, int N, cudaStream_t stream);

// dbias[j] += Σ_i dout[i, j] for dout (M, N), in a fixed order.
template <typename T>
cudaError_t LaunchAddBiasGrad(float* dbias, const T* dout, int64_t M, int N, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
