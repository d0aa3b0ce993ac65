#include "worker/zero/param_swap.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status/status_macros.h"
#include "worker/offload/byte_range.h"

namespace dstrain::zero {
namespace {

using offload::AlignUp;
using offload::kIoAlign;
using offload::SwapEngine;

// The range scratch: big enough for a few blocks' worth of a range per transfer, no bigger than
// the largest chunk needs (two blocks more: a range may start and end inside a block).
constexpr int64_t kScratchMaxBytes = int64_t{1} << 20;

int64_t ScratchBytes(int64_t largest_chunk_bytes) {
  return std::max(2 * kIoAlign,
                  std::min(kScratchMaxBytes, AlignUp(largest_chunk_bytes) + kIoAlign));
}

int64_t LargestBytes(const std::vector<int64_t>& chunks, int64_t elem) {
  int64_t largest = 0;
  for (int64_t n : chunks) largest = std::max(largest, AlignUp(n * elem));
  return largest;
}

}  // namespace

int64_t ParamSwap::FileBytes(const std::vector<int64_t>& chunks, int64_t elem_bytes) {
  int64_t total = 0;
  for (int64_t n : chunks) total += AlignUp(n * elem_bytes);
  return std::max(total, kIoAlign);
}

int64_t ParamSwap::BufferBytes(const std::vector<int64_t>& chunks, int64_t elem_bytes,
                               int64_t buffer_count) {
  const int64_t largest = LargestBytes(chunks, elem_bytes);
  const int64_t buffers = std::min<int64_t>(buffer_count, chunks.size());
  return buffers * (std::max(largest, kIoAlign) + kIoAlign) + ScratchBytes(largest) + kIoAlign;
}

absl::StatusOr<std::unique_ptr<ParamSwap>> ParamSwap::Create(std::vector<int64_t> chunks,
                                                             int64_t elem_bytes, Options options,
                                                             SwapEngine* engine,
                                                             const offload::SwapDir& dir,
                                                             tensor::Allocator* host) {
  if (options.buffer_count < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "zero_optimization.offload_param.buffer_count: ", options.buffer_count, " is below 1"));
  }
  int64_t largest = 0;
  int largest_unit = -1;
  for (size_t u = 0; u < chunks.size(); ++u) {
    if (chunks[u] > largest) largest = chunks[u], largest_unit = static_cast<int>(u);
  }
  if (largest > options.buffer_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("zero_optimization.offload_param.buffer_size: ", options.buffer_size,
                     " elements is smaller than this rank's largest parameter chunk (unit ",
                     largest_unit, ": ", largest, " elements); raise it to at least that"));
  }
  std::unique_ptr<ParamSwap> s(new ParamSwap(std::move(chunks), elem_bytes, engine));
  int64_t at = 0, offset = 0;
  for (int64_t n : s->chunks_) {
    s->owned_at_.push_back(at);
    s->file_offset_.push_back(offset);
    at += n;
    offset += AlignUp(n * elem_bytes);
  }
  s->owned_at_.push_back(at);
  DT_ASSIGN_OR_RETURN(s->file_, offload::SwapFile::Create(dir.Join("params.swp"),
                                                          FileBytes(s->chunks_, elem_bytes)));
  const int64_t buffer_bytes = std::max(LargestBytes(s->chunks_, elem_bytes), kIoAlign);
  s->slots_.resize(std::min<int64_t>(options.buffer_count, s->chunks_.size()));
  for (Slot& slot : s->slots_) {
    DT_ASSIGN_OR_RETURN(slot.buffer, offload::AlignedBuffer::Allocate(
                                         host, buffer_bytes, tensor::MemoryCategory::kParams));
  }
  DT_ASSIGN_OR_RETURN(s->scratch_, offload::AlignedBuffer::Allocate(
                                       host, ScratchBytes(LargestBytes(s->chunks_, elem_bytes)),
                                       tensor::MemoryCategory::kParams));
  return s;
}

ParamSwap::~ParamSwap() {
  for (Slot& slot : slots_) (void)engine_->Wait(slot.read);
}

int ParamSwap::SlotOf(int unit) const {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].unit == unit) return static_cast<int>(i);
  }
  return -1;
}

bool ParamSwap::Prefetch(int unit) {
  if (SlotOf(unit) >= 0) return true;
  for (Slot& slot : slots_) {
    if (slot.unit >= 0) continue;
    slot.unit = unit;
    slot.started = ++reads_started_;
    if (ChunkBytes(unit) > 0) {
      slot.read =
          engine_->Read(file_->ref(), file_offset_[unit], slot.buffer.data(), ChunkBytes(unit));
      bytes_read_ += ChunkBytes(unit);
    }
    return true;
  }
  return false;
}

bool ParamSwap::Ready(int unit) const {
  const int i = SlotOf(unit);
  return i >= 0 && SwapEngine::Done(slots_[i].read);
}

absl::Status ParamSwap::Timed(const SwapEngine::Ticket& ticket) {
  const absl::Time start = absl::Now();
  absl::Status s = engine_->Wait(ticket);
  wait_seconds_ += absl::ToDoubleSeconds(absl::Now() - start);
  return s;
}

absl::Status ParamSwap::Finish(Slot& slot) {
  absl::Status s = Timed(slot.read);
  slot.read = nullptr;
  if (!s.ok()) slot.unit = -1;  // the buffer holds nothing usable
  return s;
}

void ParamSwap::Free(Slot& slot) {
  (void)Timed(slot.read);  // the buffer is being written: let the read finish
  slot.read = nullptr;
  slot.unit = -1;
  slot.acquired = false;
}

absl::StatusOr<const char*> ParamSwap::Acquire(int unit) {
  if (unit < 0 || unit >= static_cast<int>(chunks_.size())) {
    return absl::InternalError(absl::StrCat("ParamSwap: no unit ", unit));
  }
  if (SlotOf(unit) < 0 && !Prefetch(unit)) {
    // Every buffer is taken: the newest prefetch not acquired is the one needed last.
    Slot* victim = nullptr;
    for (Slot& slot : slots_) {
      if (!slot.acquired && (victim == nullptr || slot.started > victim->started)) victim = &slot;
    }
    if (victim == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("ParamSwap: all ", slots_.size(),
                       " buffers (offload_param.buffer_count) are in use; unit ", unit, " waits"));
    }
    Free(*victim);
    Prefetch(unit);
  }
  Slot& slot = slots_[SlotOf(unit)];
  DT_RETURN_IF_ERROR(Finish(slot));
  slot.acquired = true;
  return slot.buffer.data();
}

void ParamSwap::Release(int unit) {
  const int i = SlotOf(unit);
  if (i >= 0) Free(slots_[i]);
}

double ParamSwap::TakeWaitSeconds() {
  const double s = wait_seconds_;
  wait_seconds_ = 0;
  return s;
}

int ParamSwap::UnitOf(int64_t at) const {
  // The last chunk beginning at or before `at` that is not empty.
  const auto it = std::upper_bound(owned_at_.begin(), owned_at_.end() - 1, at);
  int u = static_cast<int>(it - owned_at_.begin()) - 1;
  while (u + 1 < static_cast<int>(chunks_.size()) && chunks_[u] == 0) ++u;
  return u;
}

absl::Status ParamSwap::CheckRange(int64_t at, int64_t n) const {
  if (at < 0 || n < 0 || at + n > owned_elements()) {
    return absl::InternalError(absl::StrCat("ParamSwap: elements [", at, ", ", at + n,
                                            ") are outside the swapped parameters (",
                                            owned_elements(), ")"));
  }
  return absl::OkStatus();
}

// A range of the owned space is contiguous in the file within a chunk: one byte range per chunk
// it touches, each moved by `move(file offset, bytes, bytes done so far)`. Synchronous, so all of
// it counts as waiting.
absl::Status ParamSwap::ForEachByteRange(
    int64_t at, int64_t n,
    absl::FunctionRef<absl::Status(int64_t offset, int64_t bytes, int64_t done)> move) {
  const absl::Time start = absl::Now();
  absl::Status status;
  for (int64_t done = 0; n > 0 && status.ok();) {
    const int u = UnitOf(at);
    const int64_t len = std::min(n, owned_at_[u] + chunks_[u] - at);
    status = move(ByteOf(u, at), len * elem_, done);
    done += len * elem_;
    at += len;
    n -= len;
  }
  wait_seconds_ += absl::ToDoubleSeconds(absl::Now() - start);
  return status;
}

absl::Status ParamSwap::ReadRange(int64_t at, int64_t n, void* dst) {
  DT_RETURN_IF_ERROR(CheckRange(at, n));
  offload::BlockTraffic traffic;
  const absl::Status status =
      ForEachByteRange(at, n, [&](int64_t offset, int64_t bytes, int64_t done) {
        return offload::ReadBytes(*engine_, file_->ref(), offset, bytes,
                                  static_cast<char*>(dst) + done, scratch_, &traffic);
      });
  bytes_read_ += traffic.read;
  return status;
}

absl::Status ParamSwap::WriteRange(int64_t at, int64_t n, const void* src) {
  DT_RETURN_IF_ERROR(CheckRange(at, n));
  if (n == 0) return absl::OkStatus();
  // A buffered copy of a chunk this write changes would hand the next gather old bytes.
  const int first = UnitOf(at), last = UnitOf(at + n - 1);
  for (Slot& slot : slots_) {
    if (slot.unit >= first && slot.unit <= last) Free(slot);
  }
  offload::BlockTraffic traffic;
  const absl::Status status =
      ForEachByteRange(at, n, [&](int64_t offset, int64_t bytes, int64_t done) {
        return offload::WriteBytes(*engine_, file_->ref(), offset, bytes,
                                   static_cast<const char*>(src) + done, scratch_, &traffic);
      });
  bytes_read_ += traffic.read;
  bytes_written_ += traffic.written;
  return status;
}

}  // namespace dstrain::zero
