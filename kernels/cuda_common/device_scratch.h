// Temporary device memory tied to a stream: allocated with cudaMallocAsync and released with
// cudaFreeAsync on the same stream when the object goes away, so work enqueued before the release
// may still use it (the stream-ordered allocator keeps the memory until that work has run and
// recycles it for later allocations on the stream). For kernels that need scratch space between
// their launches. Move-only; not thread-safe.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "absl/status/statusor.h"

namespace dstrain::kernels::gpu {

class DeviceScratch {
 public:
  // Errors: kResourceExhausted when the device is out of memory; other CUDA errors via
  // CudaToStatus. Zero bytes gives an empty scratch (null pointer).
  static absl::StatusOr<DeviceScratch> Allocate(size_t bytes, cudaStream_t stream);

  DeviceScratch(DeviceScratch&& other) noexcept;
  DeviceScratch& operator=(DeviceScratch&& other) noexcept;
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  ~DeviceScratch();

  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  // The memory viewed as T, starting `offset_elements` elements in (the base is 256-byte
  // aligned). REQUIRES: the elements used lie within bytes().
  template <typename T>
  T* As(size_t offset_elements = 0) const {
    return static_cast<T*>(ptr_) + offset_elements;
  }

 private:
  DeviceScratch(void* ptr, size_t bytes, cudaStream_t stream)
      : ptr_(ptr), bytes_(bytes), stream_(stream) {}
  void Release();

  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  cudaStream_t stream_ = nullptr;
};

}  // namespace dstrain::kernels::gpu
