// LayerNorm kernels: warp-per-row forward and dinp, column reduction for dweight / dbias.
#include "kernels/cuda_common/device_common.cuh"
#include "kernels/cuda_common/reduce.cuh"
#include "kernels/layernorm/cuda/layernorm_launch.h"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr float kEps = 1e-5f;

// Warp `warp` of the block handles row blockIdx.x * kWarpsPerBlock + warp; lanes stride over C.
__global__ void LayerNormForwardWarpPerRowKernel(float* out, float* mean, float* rstd,
                                                 const float* inp, const float* weight,
                                                 const float* bias, int64_t N, int C) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (row >= N) return;  // the whole warp leaves together
  const float* x = inp + row * C;

  // Corrected two-pass: a first mean m0, then Σ(x − m0) and Σ(x − m0)².
  float sum = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) sum += x[c];
  const float m0 = WarpReduceSum(sum) / C;
  float d = 0.0f, q = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float e = x[c] - m0;
    d += e;
    q += e * e;
  }
  d = WarpReduceSum(d) / C;
  q = WarpReduceSum(q) / C;
  const float m = m0 + d;
  const float var = fmaxf(q - d * d, 0.0f);
  const float s = 1.0f / sqrtf(var + kEps);

  float* o = out + row * C;
  for (int c = lane; c < C; c += kWarpSize) o[c] = (x[c] - m) * s * weight[c] + bias[c];
  if (lane == 0) {
    if (mean != nullptr) mean[row] = m;
    if (rstd != nullptr) rstd[row] = s;
  }
}

__global__ void LayerNormBackwardDinpWarpPerRowKernel(float* dinp, const float* dout,
                                                      const float* inp, const float* weight,
                                                      const float* mean, const float* rstd,
                                                      int64_t N, int C) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (row >= N) return;
  const float* x = inp + row * C;
  const float* dy = dout + row * C;
  const float m = mean[row], s = rstd[row];

  float sum_g = 0.0f, sum_gn = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float n = (x[c] - m) * s;
    const float g = dy[c] * weight[c];
    sum_g += g;
    sum_gn += g * n;
  }
  const float mean_g = WarpReduceSum(sum_g) / C;
  const float mean_gn = WarpReduceSum(sum_gn) / C;

  float* dx = dinp + row * C;
  for (int c = lane; c < C; c += kWarpSize) {
    const float n = (x[c] - m) * s;
    const float g = dy[c] * weight[c];
    dx[c] += s * (g - mean_g - n * mean_gn);
  }
}

// dweight[c] += Σ_rows dout·n, dbias[c] += Σ_rows dout, for LaunchColumnSum<2>.
struct WeightAndBiasGrads {
  float* dweight;
  float* dbias;
  const float* dout;
  const float* inp;
  const float* mean;
  const float* rstd;
  int C;

  __device__ void Load(int64_t row, int col, float (&v)[2]) const {
    const int64_t i = row * C + col;
    const float dy = dout[i];
    v[0] = dy * ((inp[i] - mean[row]) * rstd[row]);
    v[1] = dy;
  }
  __device__ void Store(int col, const float (&sum)[2]) const {
    dweight[col] += sum[0];
    dbias[col] += sum[1];
  }
};

}  // namespace

cudaError_t LaunchLayerNormForward(float* out, float* mean, float* rstd, const float* inp,
                                   const float* weight, const float* bias, int64_t N, int C,
                                   cudaStream_t stream) {
  DT_LAUNCH(LayerNormForwardWarpPerRowKernel, CeilBlocks(N, kWarpsPerBlock),
            kWarpsPerBlock * kWarpSize, stream, out, mean, rstd, inp, weight, bias, N, C);
  return cudaGetLastError();
}

cudaError_t LaunchLayerNormBackward(float* dinp, float* dweight, float* dbias, const float* dout,
                                    const float* inp, const float* weight, const float* mean,
                                    const float* rstd, int64_t N, int C, cudaStream_t stream) {
  DT_LAUNCH(LayerNormBackwardDinpWarpPerRowKernel, CeilBlocks(N, kWarpsPerBlock),
            kWarpsPerBlock * kWarpSize, stream, dinp, dout, inp, weight, mean, rstd, N, C);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  return LaunchColumnSum<2>(WeightAndBiasGrads{dweight, dbias, dout, inp, mean, rstd, C}, N, C,
                            stream);
}

}  // namespace dstrain::kernels::gpu
