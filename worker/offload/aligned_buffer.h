// AlignedBuffer: host memory aligned to kIoAlign for direct I/O, taken from an Allocator under a
// category so the swap buffers show in the rank's accounting (docs/offload.md, "Accounting").
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/offload/io_queue.h"
#include "worker/tensor/allocator.h"

namespace dstrain::offload {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // `bytes` rounded up to kIoAlign, from `allocator` (host memory), zeroed.
  static absl::StatusOr<AlignedBuffer> Allocate(tensor::Allocator* allocator, int64_t bytes,
                                                tensor::MemoryCategory category);
  AlignedBuffer(AlignedBuffer&& o) noexcept { *this = static_cast<AlignedBuffer&&>(o); }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { Reset(); }

  char* data() const { return aligned_; }
  int64_t size() const { return size_; }
  void Reset();

 private:
  tensor::Allocator* allocator_ = nullptr;
  tensor::MemoryCategory category_ = tensor::MemoryCategory::kOther;
  void* raw_ = nullptr;
  int64_t raw_bytes_ = 0;
  char* aligned_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace dstrain::offload
