#include "worker/offload/aligned_buffer.h"

#include "common/status/status_macros.h"

namespace dstrain::offload {

absl::StatusOr<AlignedBuffer> AlignedBuffer::Allocate(tensor::Allocator* allocator, int64_t bytes,
                                                      tensor::MemoryCategory category) {
  AlignedBuffer b;
  b.size_ = AlignUp(bytes);
  // The allocator aligns to 64 bytes: one extra page leaves room to reach the next kIoAlign.
  b.raw_bytes_ = b.size_ + kIoAlign;
  DT_ASSIGN_OR_RETURN(b.raw_, allocator->Allocate(static_cast<size_t>(b.raw_bytes_), category));
  b.allocator_ = allocator;
  b.category_ = category;
  const uintptr_t p = reinterpret_cast<uintptr_t>(b.raw_);
  b.aligned_ = reinterpret_cast<char*>((p + kIoAlign - 1) / kIoAlign * kIoAlign);
  allocator->Zero(b.aligned_, static_cast<size_t>(b.size_));
  return b;
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this == &o) return *this;
  Reset();
  allocator_ = o.allocator_;
  category_ = o.category_;
  raw_ = o.raw_;
  raw_bytes_ = o.raw_bytes_;
  aligned_ = o.aligned_;
  size_ = o.size_;
  o.allocator_ = nullptr;
  o.raw_ = nullptr;
  o.aligned_ = nullptr;
  o.size_ = o.raw_bytes_ = 0;
  return *this;
}

void AlignedBuffer::Reset() {
  if (allocator_ != nullptr && raw_ != nullptr) {
    allocator_->Free(raw_, static_cast<size_t>(raw_bytes_), category_);
  }
  allocator_ = nullptr;
  raw_ = nullptr;
  aligned_ = nullptr;
  size_ = raw_bytes_ = 0;
}

}  // namespace dstrain::offload
