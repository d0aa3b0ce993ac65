// SwiGLU kernels: element-wise grid-stride loops over the N·I (gate, up) pairs.
#include "kernels/cuda_common/device_common.cuh"
#include "kernels/swiglu/cuda/swiglu_launch.h"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kThreads = 256;

// e = exp(−g) with the exponent capped at 80 (e <= 5.5e34, finite).
__device__ __forceinline__ float ExpMinus(float g) { return expf(fminf(-g, 80.0f)); }

__global__ void SwiGluForwardKernel(float* out, const float* inp, int64_t n, int I) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    const int64_t row = i / I;
    const int c = static_cast<int>(i - row * I);
    const float g = inp[row * 2 * I + c], u = inp[row * 2 * I + I + c];
    out[i] = (g / (1.0f + ExpMinus(g))) * u;
  }
}

// Both inputs of a pair are read before either gradient is written: dinp may alias inp.
__global__ void SwiGluBackwardKernel(float* dinp, const float* inp, const float* dout, int64_t n,
                                     int I) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    const int64_t row = i / I;
    const int c = static_cast<int>(i - row * I);
    const int64_t gi = row * 2 * I + c;
    const float g = inp[gi], u = inp[gi + I], dy = dout[i];
    const float e = ExpMinus(g);
    const float s = 1.0f / (1.0f + e);
    const float dsilu = s * (1.0f + g * (e * s));
    dinp[gi] = (dy * u) * dsilu;
    dinp[gi + I] = dy * (g * s);
  }
}

}  // namespace

cudaError_t LaunchSwiGluForward(float* out, const float* inp, int64_t N, int I,
                                cudaStream_t stream) {
  const int64_t n = N * I;
  DT_LAUNCH(SwiGluForwardKernel, GridStrideBlocks(n, kThreads), kThreads, stream, out, inp, n, I);
  return cudaGetLastError();
}

cudaError_t LaunchSwiGluBackward(float* dinp, const float* inp, const float* dout, int64_t N, int I,
                                 cudaStream_t stream) {
  const int64_t n = N * I;
  DT_LAUNCH(SwiGluBackwardKernel, GridStrideBlocks(n, kThreads), kThreads, stream, dinp, inp, dout,
            n, I);
  return cudaGetLastError();
}

}  // namespace dstrain::kernels::gpu
