// Fused softmax + cross-entropy: one block per row, online (max, sum) per thread, block merge.
#include <cmath>

#include "kernels/crossentropy/cuda/crossentropy_launch.h"
#include "kernels/cuda_common/device_common.cuh"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kMaxThreads = 1024;

// A softmax partial: max m and Σ exp(z − m) over some columns. Empty: m = −inf, s = 0.
struct MaxSum {
  float m;
  float s;
};

__device__ __forceinline__ MaxSum Merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return MaxSum{m, 0.0f};  // both empty
  return MaxSum{m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

__device__ __forceinline__ MaxSum WarpMerge(MaxSum v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const MaxSum other{__shfl_xor_sync(kFullWarpMask, v.m, offset),
                       __shfl_xor_sync(kFullWarpMask, v.s, offset)};
    v = Merge(v, other);
  }
  return v;
}

__global__ void CrossEntropyBlockPerRowKernel(float* losses, float* logits, const int32_t* targets,
                                              int V, int Vp, float dlogits_scale) {
  __shared__ float shared_m[kWarpSize];
  __shared__ float shared_s[kWarpSize];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  const int64_t row = blockIdx.x;
  float* z = logits + row * Vp;

  MaxSum acc{-INFINITY, 0.0f};
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    const float x = z[j];
    if (x > acc.m) {
      acc.s = acc.s * expf(acc.m - x) + 1.0f;
      acc.m = x;
    } else {
      acc.s += expf(x - acc.m);
    }
  }
  acc = WarpMerge(acc);
  if (lane == 0) {
    shared_m[warp] = acc.m;
    shared_s[warp] = acc.s;
  }
  __syncthreads();
  MaxSum total =
      lane < num_warps ? MaxSum{shared_m[lane], shared_s[lane]} : MaxSum{-INFINITY, 0.0f};
  total = WarpMerge(total);

  const int target = targets[row];
  const bool valid = 0 <= target && target < V;
  if (threadIdx.x == 0 && losses != nullptr) {
    losses[row] = valid ? logf(total.s) + total.m - z[target] : NAN;
  }
  if (dlogits_scale == 0.0f) return;  // uniform over the block
  __syncthreads();                    // z[target] is read before anyone overwrites it
  for (int j = threadIdx.x; j < Vp; j += blockDim.x) {
    float g = 0.0f;
    if (j < V) {
      const float p = expf(z[j] - total.m) / total.s;
      g = (p - (j == target ? 1.0f : 0.0f)) * dlogits_scale;
    }
    z[j] = g;
  }
}

}  // namespace

cudaError_t LaunchCrossEntropyForwardBackward(float* losses, float* logits, const int32_t* targets,
                                              int64_t N, int V, int Vp, float dlogits_scale,
                                              cudaStream_t stream) {
  const int threads = std::min(kMaxThreads, (V + kWarpSize - 1) / kWarpSize * kWarpSize);
  DT_LAUNCH(CrossEntropyBlockPerRowKernel, static_cast<unsigned>(N), threads, stream, losses,
            logits, targets, V, Vp, dlogits_scale);
  return cudaGetLastError();
}

}  // namespace dstrain::kernels::gpu
