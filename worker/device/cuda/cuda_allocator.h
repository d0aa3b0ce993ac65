// CudaAllocator: device memory for one CUDA device, cached, with the per-category accounting every
// tensor::Allocator keeps.
//
// Caching. A freed block goes back to a free list keyed by its rounded size and serves the next
// allocation of that size; cudaMalloc runs only when no cached block fits, and cudaFree only when
// an allocation fails (then every cached block is released and the allocation tried once more)
// and at destruction. A training step allocates the same sizes every time, so after the first
// step nothing reaches the driver. Sizes round up to 512 bytes below 1 MiB and to 2 MiB above, so
// the cache holds at most one rounding's worth of slack per block.
//
// Stream order. All the device's work that touches this memory is ordered on (or after) its
// compute stream, and the memory is reused only for allocations whose work is issued later on that
// stream: so a block may be freed while queued work still uses it (tensor/allocator.h's contract).
//
// Out of memory. An allocation beyond the budget (limit_bytes, when set) or beyond what the device
// holds fails with kResourceExhausted naming the category, the bytes asked, the bytes in use by
// category, the cached bytes, and what `dstrain estimate` predicted for this rank when the trainer
// told it (set_expected): never a crash.
//
// Thread-safe.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tensor/allocator.h"

namespace dstrain::device {

class CudaAllocator final : public tensor::Allocator {
 public:
  // Memory of CUDA device `device`, zeroed and ordered on `stream` (the compute stream).
  // limit_bytes > 0 caps the bytes in use (tests of memory budgets).
  CudaAllocator(int device, cudaStream_t stream, int64_t limit_bytes = 0);
  ~CudaAllocator() override;

  absl::StatusOr<void*> Allocate(size_t bytes, tensor::MemoryCategory category) override;
  void Free(void* p, size_t bytes, tensor::MemoryCategory category) override;
  void Zero(void* p, size_t bytes) override;
  Device device() const override { return Device::Cuda(device_); }

  // What the out-of-memory message quotes as the prediction (one line, e.g. the estimate's total).
  void set_expected(std::string expected);
  // Bytes held in the cache (allocated from the driver, not in use).
  int64_t cached_bytes() const;
  // Calls into cudaMalloc so far (for tests that no step allocates from the driver).
  int64_t driver_allocations() const;

  // The rounded size a request occupies.
  static size_t RoundSize(size_t bytes);

 private:
  std::string OutOfMemory(size_t bytes, tensor::MemoryCategory category,
                          const std::string& why) const;
  void ReleaseCache();  // REQUIRES: mu_ held

  const int device_;
  const cudaStream_t stream_;
  const int64_t limit_bytes_;
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;  // rounded size -> cached block
  int64_t cached_ = 0;
  int64_t driver_allocations_ = 0;
  std::string expected_;
};

}  // namespace dstrain::device
