// RMSNorm kernels: warp-per-row forward and dinp, column reduction for dweight.
#include "kernels/cuda_common/device_common.cuh"
#include "kernels/cuda_common/reduce.cuh"
#include "kernels/rmsnorm/cuda/rmsnorm_launch.h"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kWarpsPerBlock = 8;

// Warp `warp` of the block handles row blockIdx.x * kWarpsPerBlock + warp; lanes stride over C.
__global__ void RmsNormForwardWarpPerRowKernel(float* out, float* rstd, const float* inp,
                                               const float* weight, int64_t N, int C, float eps) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (row >= N) return;  // the whole warp leaves together
  const float* x = inp + row * C;
  float q = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) q += x[c] * x[c];
  const float ms = WarpReduceSum(q) / C;
  const float s = 1.0f / sqrtf(ms + eps);
  // Every lane has read its elements of x (and the warp's shuffles are done) before any write, so
  // out may alias inp: each lane writes only the elements it read.
  float* o = out + row * C;
  for (int c = lane; c < C; c += kWarpSize) o[c] = (x[c] * s) * weight[c];
  if (lane == 0 && rstd != nullptr) rstd[row] = s;
}

__global__ void RmsNormBackwardDinpWarpPerRowKernel(float* dinp, const float* dout,
                                                    const float* inp, const float* weight,
                                                    const float* rstd, int64_t N, int C) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (row >= N) return;
  const float* x = inp + row * C;
  const float* dy = dout + row * C;
  const float s = rstd[row];
  float sum_gn = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) sum_gn += (dy[c] * weight[c]) * (x[c] * s);
  const float mean_gn = WarpReduceSum(sum_gn) / C;
  float* dx = dinp + row * C;
  for (int c = lane; c < C; c += kWarpSize) {
    const float n = x[c] * s;
    dx[c] += s * (dy[c] * weight[c] - n * mean_gn);
  }
}

// dweight[c] += Σ_rows dout·x·rstd, for LaunchColumnSum<1>.
struct WeightGrad {
  float* dweight;
  const float* dout;
  const float* inp;
  const float* rstd;
  int C;

  __device__ void Load(int64_t row, int col, float (&v)[1]) const {
    const int64_t i = row * C + col;
    v[0] = dout[i] * (inp[i] * rstd[row]);
  }
  __device__ void Store(int col, const float (&sum)[1]) const { dweight[col] += sum[0]; }
};

}  // namespace

cudaError_t LaunchRmsNormForward(float* out, float* rstd, const float* inp, const float* weight,
                                 int64_t N, int C, float eps, cudaStream_t stream) {
  DT_LAUNCH(RmsNormForwardWarpPerRowKernel, CeilBlocks(N, kWarpsPerBlock),
            kWarpsPerBlock * kWarpSize, stream, out, rstd, inp, weight, N, C, eps);
  return cudaGetLastError();
}

cudaError_t LaunchRmsNormBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                                  const float* weight, const float* rstd, int64_t N, int C,
                                  cudaStream_t stream) {
  DT_LAUNCH(RmsNormBackwardDinpWarpPerRowKernel, CeilBlocks(N, kWarpsPerBlock),
            kWarpsPerBlock * kWarpSize, stream, dinp, dout, inp, weight, rstd, N, C);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  return LaunchColumnSum<1>(WeightGrad{dweight, dout, inp, rstd, C}, N, C, stream);
}

}  // namespace dstrain::kernels::gpu
