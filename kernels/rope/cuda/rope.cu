// RoPE kernels: the float64 cos/sin table and the rotation, both grid-stride loops.
#include <cmath>

#include "kernels/cuda_common/device_common.cuh"
#include "kernels/rope/cuda/rope_launch.h"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kThreads = 256;

// One (position, pair) per index: table[p][i] = cos(p·θ_i), table[p][half + i] = sin(p·θ_i).
__global__ void RopeTableKernel(float* table, int64_t n, int head_dim, double theta) {
  const int half = head_dim / 2;
  for (int64_t k = GridStrideBegin(); k < n; k += GridStrideStep()) {
    const int64_t p = k / half;
    const int i = static_cast<int>(k - p * half);
    const double angle = static_cast<double>(p) * pow(theta, -2.0 * i / head_dim);
    table[p * head_dim + i] = static_cast<float>(cos(angle));
    table[p * head_dim + half + i] = static_cast<float>(sin(angle));
  }
}

// One (token, head, pair) per index; both elements of the pair are read before either is
// written, and no other thread touches them: out may alias inp.
__global__ void RopeRotateKernel(float* out, int64_t out_stride, const float* inp,
                                 int64_t inp_stride, const float* table, int64_t n, int T,
                                 int n_heads, int head_dim, int pos_offset, float sin_sign) {
  const int half = head_dim / 2;
  for (int64_t k = GridStrideBegin(); k < n; k += GridStrideStep()) {
    const int64_t rest = k / half;
    const int i = static_cast<int>(k - rest * half);
    const int64_t row = rest / n_heads;
    const int h = static_cast<int>(rest - row * n_heads);
    const int64_t pos = pos_offset + row % T;
    const float c = table[pos * head_dim + i];
    const float s = sin_sign * table[pos * head_dim + half + i];
    const float* x = inp + row * inp_stride + static_cast<int64_t>(h) * head_dim + i;
    float* y = out + row * out_stride + static_cast<int64_t>(h) * head_dim + i;
    const float a = x[0], b = x[half];
    y[0] = a * c - b * s;
    y[half] = b * c + a * s;
  }
}

}  // namespace

cudaError_t LaunchRopeTable(float* table, int max_pos, int head_dim, double theta,
                            cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(max_pos) * (head_dim / 2);
  DT_LAUNCH(RopeTableKernel, GridStrideBlocks(n, kThreads), kThreads, stream, table, n, head_dim,
            theta);
  return cudaGetLastError();
}

cudaError_t LaunchRopeRotate(float* out, int64_t out_stride, const float* inp, int64_t inp_stride,
                             const float* table, int B, int T, int n_heads, int head_dim,
                             int pos_offset, float sin_sign, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(B) * T * n_heads * (head_dim / 2);
  DT_LAUNCH(RopeRotateKernel, GridStrideBlocks(n, kThreads), kThreads, stream, out, out_stride, inp,
            inp_stride, table, n, T, n_heads, head_dim, pos_offset, sin_sign);
  return cudaGetLastError();
}

}  // namespace dstrain::kernels::gpu
