// PinnedHostAllocator: page-locked host memory (cudaHostAlloc) with the per-category accounting
// every tensor::Allocator keeps. The device's copy engines read and write it directly, so a copy
// to or from it is asynchronous (CudaOps::CopyToHostAsync, CopyFromHostAsync) and runs at the
// link's speed; pageable memory goes through the driver's staging buffer instead, and a copy into
// it holds the host until it ends. What ZeRO-Offload keeps on the host of a GPU rank with
// offload_optimizer.pin_memory (docs/offload.md).
//
// Page-locked memory is taken from what the kernel may swap, so a budget (`limit_bytes` > 0) caps
// it as for the device. Allocations beyond it, or beyond what the driver will lock, fail with
// kResourceExhausted naming the category and the bytes. Free waits for the device's queued copies
// of the block (cudaFreeHost does). Thread-safe.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/tensor/allocator.h"

namespace dstrain::device {

class PinnedHostAllocator final : public tensor::Allocator {
 public:
  explicit PinnedHostAllocator(int64_t limit_bytes = 0) : limit_bytes_(limit_bytes) {}

  absl::StatusOr<void*> Allocate(size_t bytes, tensor::MemoryCategory category) override;
  void Free(void* p, size_t bytes, tensor::MemoryCategory category) override;
  void Zero(void* p, size_t bytes) override;
  Device device() const override { return Device::Cpu(); }  // host memory

 private:
  const int64_t limit_bytes_;
};

}  // namespace dstrain::device
