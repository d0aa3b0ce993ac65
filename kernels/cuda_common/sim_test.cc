// The CUDA simulator itself: barriers, shuffles, votes, how it reports broken kernels, and its
// late copies to and from page-locked memory.
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/device_common.cuh"

namespace dstrain::kernels::gpu {
namespace {

// out[i] = value written by thread (i + 1) % n before the barrier.
__global__ void RotateKernel(int* out) {
  __shared__ int values[1024];
  const int n = blockDim.x;
  values[threadIdx.x] = 1000 * blockIdx.x + threadIdx.x;
  __syncthreads();
  out[blockIdx.x * n + threadIdx.x] = values[(threadIdx.x + 1) % n];
}

TEST(SimTest, SharedMemoryAndBarrier) {
  for (int threads : {32, 100, 1024}) {
    std::vector<int> out(3 * threads, -1);
    DT_LAUNCH(RotateKernel, 3, threads, nullptr, out.data());
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    for (int b = 0; b < 3; ++b) {
      for (int t = 0; t < threads; ++t) {
        ASSERT_EQ(out[b * threads + t], 1000 * b + (t + 1) % threads);
      }
    }
  }
}

__global__ void ShuffleKernel(int* xor_out, int* down_out, int* idx_out) {
  const int lane = threadIdx.x % 32;
  const int i = threadIdx.x;
  xor_out[i] = __shfl_xor_sync(kFullWarpMask, 100 + lane, 5);
  down_out[i] = __shfl_down_sync(kFullWarpMask, 100 + lane, 3);
  idx_out[i] = __shfl_sync(kFullWarpMask, 100 + lane + 1000 * (i / 32), 7);
}

TEST(SimTest, Shuffles) {
  std::vector<int> x(64), d(64), s(64);
  DT_LAUNCH(ShuffleKernel, 1, 64, nullptr, x.data(), d.data(), s.data());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  for (int i = 0; i < 64; ++i) {
    const int lane = i % 32;
    EXPECT_EQ(x[i], 100 + (lane ^ 5));
    EXPECT_EQ(d[i], 100 + (lane + 3 < 32 ? lane + 3 : lane));  // out of range: own value
    EXPECT_EQ(s[i], 107 + 1000 * (i / 32));
  }
}

__global__ void VoteKernel(int* out) {
  const int any = __syncthreads_or(threadIdx.x == 77);
  const int count = __syncthreads_count(threadIdx.x % 3 == 0);
  const int all = __syncthreads_and(threadIdx.x < 1000);
  if (threadIdx.x == 0) {
    out[0] = any;
    out[1] = count;
    out[2] = all;
  }
}

TEST(SimTest, BlockVotes) {
  std::vector<int> out(3, -1);
  DT_LAUNCH(VoteKernel, 1, 128, nullptr, out.data());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(out[0], 1);
  EXPECT_EQ(out[1], 43);  // 0, 3, ..., 126
  EXPECT_EQ(out[2], 1);
}

__global__ void DivergentBarrierKernel(int* out) {
  if (threadIdx.x < 16) return;
  __syncthreads();  // undefined: half the block has left
  out[threadIdx.x] = 1;
}

__global__ void BarrierInBranchKernel(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_xor_sync(kFullWarpMask, 1, 1);
  }
}

__global__ void ShuffleWithExitedLaneKernel(int* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_xor_sync(kFullWarpMask, 1, 1);
}

__global__ void EmptyKernel(int) {}

TEST(SimTest, ReportsBrokenKernelsAsLaunchFailures) {
  std::vector<int> out(64);
  DT_LAUNCH(DivergentBarrierKernel, 1, 64, nullptr, out.data());
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  DT_LAUNCH(BarrierInBranchKernel, 1, 64, nullptr, out.data());
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  DT_LAUNCH(ShuffleWithExitedLaneKernel, 1, 32, nullptr, out.data());
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // reading clears it
  DT_LAUNCH(EmptyKernel, 1, 32, nullptr, 0);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // the simulator recovers
}

TEST(SimTest, RejectsBadLaunchConfigurations) {
  DT_LAUNCH(EmptyKernel, 0, 32, nullptr, 0);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  DT_LAUNCH(EmptyKernel, 1, 2048, nullptr, 0);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  DT_LAUNCH(EmptyKernel, dim3(1, 70000), 32, nullptr, 0);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
}

// x[i] += 1 for i < n.
__global__ void IncrementKernel(int* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1;
}

// A copy into page-locked memory lands when the host waits for an event recorded after it (and no
// earlier), a copy out of it takes the bytes the source holds then: the two mistakes an
// asynchronous copy allows show up as wrong values.
TEST(SimTest, CopiesWithPinnedMemoryHappenWhenWaitedFor) {
  constexpr int n = 64;
  int *pinned = nullptr, *device = nullptr;
  ASSERT_EQ(cudaHostAlloc(reinterpret_cast<void**>(&pinned), n * sizeof(int), 0), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&device), n * sizeof(int)), cudaSuccess);
  cudaPointerAttributes attr;
  ASSERT_EQ(cudaPointerGetAttributes(&attr, pinned + 3), cudaSuccess);
  EXPECT_EQ(attr.type, cudaMemoryTypeHost);
  int unregistered = 0;
  ASSERT_EQ(cudaPointerGetAttributes(&attr, &unregistered), cudaSuccess);
  EXPECT_EQ(attr.type, cudaMemoryTypeUnregistered);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  cudaEvent_t first, second;
  ASSERT_EQ(cudaEventCreate(&first), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&second), cudaSuccess);

  for (int i = 0; i < n; ++i) device[i] = i;
  std::memset(pinned, 0, n * sizeof(int));
  ASSERT_EQ(cudaMemcpyAsync(pinned, device, n / 2 * sizeof(int), cudaMemcpyDeviceToHost, stream),
            cudaSuccess);
  ASSERT_EQ(cudaEventRecord(first, stream), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(pinned + n / 2, device + n / 2, n / 2 * sizeof(int),
                            cudaMemcpyDeviceToHost, stream),
            cudaSuccess);
  ASSERT_EQ(cudaEventRecord(second, stream), cudaSuccess);
  EXPECT_EQ(pinned[1], 0);  // not waited for: not there yet
  ASSERT_EQ(cudaEventSynchronize(first), cudaSuccess);
  EXPECT_EQ(pinned[1], 1);
  EXPECT_EQ(pinned[n - 1], 0);  // the copy after `first` is still queued
  ASSERT_EQ(cudaEventSynchronize(second), cudaSuccess);
  EXPECT_EQ(pinned[n - 1], n - 1);

  // Host to device: the source is read when the copy happens, here at the launch that follows it.
  for (int i = 0; i < n; ++i) pinned[i] = 100 + i;
  ASSERT_EQ(cudaMemcpyAsync(device, pinned, n * sizeof(int), cudaMemcpyHostToDevice, stream),
            cudaSuccess);
  pinned[0] = -7;  // rewritten too early: the device receives this
  DT_LAUNCH(IncrementKernel, 1, n, stream, device, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(device[0], -6);
  EXPECT_EQ(device[n - 1], 100 + n);

  // Pageable memory: the copy has happened when the call returns.
  std::vector<int> pageable(n, 0);
  ASSERT_EQ(
      cudaMemcpyAsync(pageable.data(), device, n * sizeof(int), cudaMemcpyDeviceToHost, stream),
      cudaSuccess);
  EXPECT_EQ(pageable[1], 102);

  // Freeing waits for the queue; a pointer that is not page-locked is refused.
  ASSERT_EQ(cudaMemcpyAsync(pinned, device, sizeof(int), cudaMemcpyDeviceToHost, stream),
            cudaSuccess);
  EXPECT_EQ(cudaFreeHost(pageable.data()), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(pinned), cudaErrorInvalidValue);  // twice
  cudaGetLastError();
  cudaEventDestroy(first);
  cudaEventDestroy(second);
  cudaFree(device);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
