// The CUDA simulator: compiles this project's CUDA kernels as plain host C++ and runs them on the
// CPU, so that CPU-only CI executes their indexing, launch branches and reductions.
//
// A `.cu` file built by dt_cuda_library (cuda.bzl) is also compiled, by the host C++ compiler, into
// the test-only `<name>_sim` library with DT_CUDA_SIM defined; device_common.cuh then includes
// this header instead of nvcc's device headers. Kernel launches go through DT_LAUNCH, which here
// runs the whole grid at once, synchronously, on the calling thread:
//   - thread blocks run one after another; the threads of a block run as fibers (ucontext), each
//     until it blocks on __syncthreads() or a warp shuffle, in a shuffled but fixed order, so that
//     a missing barrier shows up as a wrong result rather than passing by luck;
//   - __shared__ variables become function-local statics (blocks never overlap);
//   - a block whose threads cannot all make progress (a barrier inside divergent code or after
//     some threads returned, a shuffle whose mask names an exited lane) stops the launch with
//     cudaErrorLaunchFailure and a message on stderr, like a hung or faulting kernel;
//   - grid and block sizes are checked as the hardware does (cudaErrorInvalidConfiguration).
// "Device" memory is host memory, streams are ignored, and cuBLAS is a naive loop with cuBLAS's
// column-major argument checks (sim_cublas.cc). One thing is asynchronous on purpose: a
// cudaMemcpyAsync whose host side is page-locked memory (cudaHostAlloc / cudaMallocHost) is
// queued, and happens only when the calling thread next does something ordered after it (a launch,
// a cuBLAS call, a synchronous copy or memset, a stream, event or device synchronization, a free),
// the latest moment a GPU may perform it. A host that reads a copy's destination, or rewrites its
// source, before waiting for it then sees the wrong bytes, as it may on a GPU. What it cannot show:
// races between blocks, the memory model, timing, and anything specific to real hardware. Threads
// of the process (ranks as threads in tests) each have their own error state, and their launches
// take turns.
#pragma once

#if !defined(DT_CUDA_SIM)
#error "kernels/cuda_common/sim.h is only for DT_CUDA_SIM builds"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace dt_sim {

// Coordinates of the simulated thread that is running now.
const uint3& ThreadIdx();
const uint3& BlockIdx();
const dim3& BlockDim();
const dim3& GridDim();

// Block barrier; returns how many of the block's live threads passed a non-zero `predicate`.
int SyncThreadsCount(int predicate);

// Warp exchange behind the __shfl_*_sync family: every lane of `mask` publishes `value` and
// receives the value of lane `src_lane` (a lane index within the warp).
uint64_t WarpShuffle(unsigned mask, uint64_t value, int src_lane);

// The lane of the running thread within its warp.
int LaneId();

// Performs this thread's queued copies to and from page-locked memory (see above), in order.
void FlushPendingCopies();
// How many copies this thread has queued so far; FlushCopiesUpTo(n) performs the first n (what an
// event recorded after them waits for).
uint64_t IssuedCopies();
void FlushCopiesUpTo(uint64_t issued);

// Runs `body` once per thread of the grid. Records a launch error for cudaGetLastError.
void RunKernel(dim3 grid, dim3 block, const std::function<void()>& body);

template <typename... Params>
class Launcher {
 public:
  Launcher(void (*kernel)(Params...), dim3 grid, dim3 block)
      : kernel_(kernel), grid_(grid), block_(block) {}
  template <typename... Args>
  void operator()(Args&&... args) const {
    // Converted once to the kernel's parameter types, as cudaLaunchKernel does.
    std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
    RunKernel(grid_, block_, [&] { std::apply(kernel_, params); });
  }

 private:
  void (*kernel_)(Params...);
  dim3 grid_, block_;
};

template <typename... Params>
Launcher<Params...> MakeLauncher(void (*kernel)(Params...), dim3 grid, dim3 block,
                                 cudaStream_t /*stream*/) {
  return Launcher<Params...>(kernel, grid, block);
}

template <typename T>
uint64_t ToBits(T v) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}

template <typename T>
T FromBits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

}  // namespace dt_sim

#define DT_LAUNCH(kernel, grid, block, stream, ...) \
  ::dt_sim::MakeLauncher((kernel), dim3(grid), dim3(block), (stream))(__VA_ARGS__)

#define threadIdx (::dt_sim::ThreadIdx())
#define blockIdx (::dt_sim::BlockIdx())
#define blockDim (::dt_sim::BlockDim())
#define gridDim (::dt_sim::GridDim())

#undef __shared__
#define __shared__ static

#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

inline void __syncthreads() { ::dt_sim::SyncThreadsCount(0); }
inline int __syncthreads_count(int predicate) { return ::dt_sim::SyncThreadsCount(predicate); }
inline int __syncthreads_or(int predicate) { return ::dt_sim::SyncThreadsCount(predicate) > 0; }
inline int __syncthreads_and(int predicate) {
  return ::dt_sim::SyncThreadsCount(!predicate) == 0;  // no thread failed the predicate
}

template <typename T>
T __shfl_sync(unsigned mask, T value, int src_lane, int width = 32) {
  const int lane = ::dt_sim::LaneId();
  const int src = (lane & ~(width - 1)) + (src_lane & (width - 1));
  return ::dt_sim::FromBits<T>(::dt_sim::WarpShuffle(mask, ::dt_sim::ToBits(value), src));
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  const int lane = ::dt_sim::LaneId();
  int src = lane ^ lane_mask;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;  // outside the segment
  return ::dt_sim::FromBits<T>(::dt_sim::WarpShuffle(mask, ::dt_sim::ToBits(value), src));
}

template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  const int lane = ::dt_sim::LaneId();
  int src = lane + static_cast<int>(delta);
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return ::dt_sim::FromBits<T>(::dt_sim::WarpShuffle(mask, ::dt_sim::ToBits(value), src));
}

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::dt_sim::WarpShuffle(mask, 0, ::dt_sim::LaneId());
}

// Fibers of one OS thread never run at the same time, so plain read-modify-write is atomic.
template <typename T>
T atomicAdd(T* address, T value) {
  T old = *address;
  *address = old + value;
  return old;
}
template <typename T>
T atomicExch(T* address, T value) {
  T old = *address;
  *address = value;
  return old;
}
inline int atomicOr(int* address, int value) {
  int old = *address;
  *address = old | value;
  return old;
}
inline unsigned atomicOr(unsigned* address, unsigned value) {
  unsigned old = *address;
  *address = old | value;
  return old;
}

template <typename T>
T __ldg(const T* p) {
  return *p;
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline unsigned __float_as_uint(float x) {
  return ::dt_sim::FromBits<unsigned>(::dt_sim::ToBits(x));
}
inline float __uint_as_float(unsigned x) { return ::dt_sim::FromBits<float>(::dt_sim::ToBits(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
