// ArenaAllocator: blocks carved out of one region of host memory it does not own (first fit, in
// 64-byte granules), and once the region is full, blocks of a fallback allocator.
//
// Why: some memory is special for where it lives rather than for how much there is (a region a
// communicator maps into every rank of a group, comm::Communicator::AllocateHostBuffer), and the
// buffers that should live there come and go with the steps (gradient buckets). The blocks of the
// region are counted in the fallback's statistics under their category (Allocator::AccountFor),
// so the device's figures stay whole; this allocator's own statistics stay zero.
//
// Thread-safe. The region must outlive every block carved from it.
#pragma once

#include <cstddef>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "worker/tensor/allocator.h"

namespace dstrain::tensor {

class ArenaAllocator final : public Allocator {
 public:
  // REQUIRES: `base` 64-byte aligned, host memory of `fallback`'s device.
  ArenaAllocator(char* base, size_t bytes, Allocator* fallback);

  absl::StatusOr<void*> Allocate(size_t bytes, MemoryCategory category) override;
  void Free(void* p, size_t bytes, MemoryCategory category) override;
  void Zero(void* p, size_t bytes) override;
  Device device() const override { return fallback_->device(); }

  // Whether `p` lies in the region.
  bool Contains(const void* p) const;

  // The bytes of the region a block of `bytes` takes: whole granules, and for a block of
  // kColorMinBytes or more the room to start it at its cache colour (allocator.h). The k-th such
  // block carved from this region takes colour k.
  static size_t BlockBytes(size_t bytes);

 private:
  static size_t Granules(size_t bytes);

  char* const base_;
  const size_t bytes_;
  Allocator* const fallback_;
  absl::Mutex mu_;
  std::map<size_t, size_t> free_ ABSL_GUARDED_BY(mu_);  // offset -> length, coalesced
  size_t next_color_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dstrain::tensor
