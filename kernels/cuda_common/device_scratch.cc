#include "kernels/cuda_common/device_scratch.h"

#include <utility>

#include "kernels/cuda_common/cuda_status.h"

namespace dstrain::kernels::gpu {

absl::StatusOr<DeviceScratch> DeviceScratch::Allocate(size_t bytes, cudaStream_t stream) {
  void* ptr = nullptr;
  if (bytes > 0) DT_CUDA_RETURN_IF_ERROR(cudaMallocAsync(&ptr, bytes, stream));
  return DeviceScratch(ptr, bytes, stream);
}

DeviceScratch::DeviceScratch(DeviceScratch&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      stream_(other.stream_) {}

DeviceScratch& DeviceScratch::operator=(DeviceScratch&& other) noexcept {
  if (this != &other) {
    Release();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    stream_ = other.stream_;
  }
  return *this;
}

DeviceScratch::~DeviceScratch() { Release(); }

void DeviceScratch::Release() {
  // A failure here means the context is already broken; the next checked call reports it.
  if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);
  ptr_ = nullptr;
}

}  // namespace dstrain::kernels::gpu
