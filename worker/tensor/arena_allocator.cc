#include "worker/tensor/arena_allocator.h"

#include <cstring>
#include <iterator>

namespace dstrain::tensor {

namespace {
constexpr size_t kGranule = 64;
}  // namespace

ArenaAllocator::ArenaAllocator(char* base, size_t bytes, Allocator* fallback)
    : base_(base), bytes_(bytes / kGranule * kGranule), fallback_(fallback) {
  if (bytes_ > 0) free_[0] = bytes_;
}

size_t ArenaAllocator::Granules(size_t bytes) {
  return (bytes + kGranule - 1) / kGranule * kGranule;
}

size_t ArenaAllocator::BlockBytes(size_t bytes) {
  return Granules(bytes) + (bytes >= kColorMinBytes ? kColoredExtraBytes : 0);
}

bool ArenaAllocator::Contains(const void* p) const {
  const char* c = static_cast<const char*>(p);
  return c >= base_ && c < base_ + bytes_;
}

absl::StatusOr<void*> ArenaAllocator::Allocate(size_t bytes, MemoryCategory category) {
  const size_t need = BlockBytes(bytes);
  if (need > 0) {
    absl::MutexLock lock(&mu_);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < need) continue;
      const size_t at = it->first, left = it->second - need;
      free_.erase(it);
      if (left > 0) free_[at + need] = left;
      fallback_->AccountFor(category, static_cast<int64_t>(bytes));
      if (bytes < kColorMinBytes) return static_cast<void*>(base_ + at);
      // Coloured: the extent's offset goes in the line below the block, for Free.
      char* p = ColoredStart(base_ + at, next_color_++);
      std::memcpy(p - sizeof(size_t), &at, sizeof(size_t));
      return static_cast<void*>(p);
    }
  }
  return fallback_->Allocate(bytes, category);
}

void ArenaAllocator::Free(void* p, size_t bytes, MemoryCategory category) {
  if (!Contains(p)) {
    fallback_->Free(p, bytes, category);
    return;
  }
  fallback_->AccountFor(category, -static_cast<int64_t>(bytes));
  size_t at = static_cast<char*>(p) - base_, len = BlockBytes(bytes);
  if (bytes >= kColorMinBytes) std::memcpy(&at, static_cast<char*>(p) - sizeof(size_t), sizeof(at));
  absl::MutexLock lock(&mu_);
  auto next = free_.lower_bound(at);
  if (next != free_.end() && at + len == next->first) {  // joins the extent after it
    len += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == at) {  // joins the extent before it
      prev->second += len;
      return;
    }
  }
  free_[at] = len;
}

void ArenaAllocator::Zero(void* p, size_t bytes) {
  if (Contains(p)) {
    std::memset(p, 0, bytes);
  } else {
    fallback_->Zero(p, bytes);
  }
}

}  // namespace dstrain::tensor
