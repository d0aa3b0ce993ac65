// Shared device-side vocabulary for this project's `.cu` files: the CUDA headers (or, in
// simulator builds, sim.h), the DT_LAUNCH launch macro, and small index helpers.
//
// Launch every kernel with DT_LAUNCH, never with <<<...>>> directly, so the same `.cu` also builds
// for the CPU simulator (sim.h):
//   DT_LAUNCH(GeluForwardKernel, blocks, kThreads, stream, out, inp, n);  // kernel, grid, block,
//   return cudaGetLastError();                                             // stream, arguments
// A kernel template with several arguments goes through a pointer first (the macro would split
// the template argument list):
//   auto* kernel = CastKernel<float, __nv_bfloat16>;
//   DT_LAUNCH(kernel, blocks, kThreads, stream, out, in, n);
// Kernels take at least one argument. No dynamic shared memory: use fixed-size __shared__ arrays.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(DT_CUDA_SIM)
#include "kernels/cuda_common/sim.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define DT_LAUNCH(kernel, grid, block, stream, ...) \
  kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

namespace dstrain::kernels::gpu {

inline constexpr int kWarpSize = 32;
inline constexpr unsigned kFullWarpMask = 0xffffffffu;

// Blocks for a grid-stride loop over n elements with `threads` per block, at most `max_blocks`
// (1024 blocks of 256 threads fill an H100's 132 SMs about twice over). REQUIRES: n > 0.
inline unsigned GridStrideBlocks(int64_t n, int threads, int64_t max_blocks = 1024) {
  return static_cast<unsigned>(std::min<int64_t>(max_blocks, (n + threads - 1) / threads));
}

// Blocks to cover n items with `per_block` items each. REQUIRES: n > 0.
inline unsigned CeilBlocks(int64_t n, int64_t per_block) {
  return static_cast<unsigned>((n + per_block - 1) / per_block);
}

// The first index and the stride of a 1-D grid-stride loop.
__device__ __forceinline__ int64_t GridStrideBegin() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t GridStrideStep() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Finite (not NaN, not ±inf), by the exponent bits: immune to fast-math rewrites.
__device__ __forceinline__ bool IsFinite(float x) {
  return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}

// Conversions between the storage types and fp32; to narrow types with round-to-nearest-even.
__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) {
  return __float2half_rn(x);
}

}  // namespace dstrain::kernels::gpu
