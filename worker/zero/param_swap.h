// ParamSwap: ZeRO-Infinity's parameter partition on NVMe (docs/offload.md, "Parameters on NVMe").
// At ZeRO stage 3 a rank owns one chunk of each unit's parameters; with offload_param.device
// "nvme" those chunks, in the storage dtype, live in one O_DIRECT file, each chunk starting on a
// kIoAlign boundary, and only `buffer_count` of them are in host memory at once:
//
//   params.swp: | unit 0's chunk | pad | unit 1's chunk | pad | ...
//
// A gather takes a unit's chunk through a buffer: Prefetch starts its read while the model
// computes on an earlier unit, Acquire waits for it (or reads it now) and hands the buffer out
// until Release. Between steps and in the update, ReadRange and WriteRange move any range of the
// owned space (elements in the order of the units' chunks), in whole blocks through a scratch
// buffer; a write first drops any buffered copy of the chunks it touches, so no later gather
// sees old bytes. An I/O error names the file and offset (swap_engine.h); the caller fails the
// step and the job resumes from its last checkpoint. Not thread-safe; one ZeroState drives it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "worker/offload/aligned_buffer.h"
#include "worker/offload/swap_engine.h"
#include "worker/offload/swap_file.h"
#include "worker/tensor/allocator.h"

namespace dstrain::zero {

// The update takes a window's swapped parameters into memory at most this many at a time.
inline constexpr int64_t kParamUpdatePieceFloats = int64_t{1} << 20;

class ParamSwap {
 public:
  struct Options {
    int64_t buffer_count = 5;         // offload_param.buffer_count
    int64_t buffer_size = 100000000;  // offload_param.buffer_size, elements per buffer
  };
  // The file's size for chunks of these lengths (elements of `elem_bytes` each).
  static int64_t FileBytes(const std::vector<int64_t>& chunks, int64_t elem_bytes);
  // The host memory its buffers take as the allocator counts them (kParams): min(buffer_count,
  // chunks) buffers of the largest chunk and the range scratch, each with a page to align it.
  static int64_t BufferBytes(const std::vector<int64_t>& chunks, int64_t elem_bytes,
                             int64_t buffer_count);
  // Creates the file in `dir` (read as zeros until written) and the buffers from `host`.
  // kInvalidArgument, naming offload_param.buffer_size, when a chunk is larger than a buffer, or
  // buffer_count below 1. `engine` and `dir` outlive it.
  static absl::StatusOr<std::unique_ptr<ParamSwap>> Create(std::vector<int64_t> chunks,
                                                           int64_t elem_bytes, Options options,
                                                           offload::SwapEngine* engine,
                                                           const offload::SwapDir& dir,
                                                           tensor::Allocator* host);
  ~ParamSwap();  // waits for the reads in flight

  // Starts reading `unit`'s chunk into a free buffer; false when every buffer is taken (nothing
  // started). True when it is buffered or on its way already.
  bool Prefetch(int unit);
  // Whether `unit`'s chunk is in a buffer with its read finished (Acquire will not wait).
  bool Ready(int unit) const;
  // `unit`'s chunk, in a buffer valid until Release(unit): read now unless prefetched. With every
  // buffer taken, the newest prefetch not acquired makes room. kFailedPrecondition when every
  // buffer is acquired.
  absl::StatusOr<const char*> Acquire(int unit);
  void Release(int unit);

  // Elements [at, at + n) of the owned space out of or into host memory (any alignment), moving
  // only the blocks the range covers (a block covered in part is read before it is written).
  absl::Status ReadRange(int64_t at, int64_t n, void* dst);
  absl::Status WriteRange(int64_t at, int64_t n, const void* src);

  int64_t file_bytes() const { return file_->size(); }
  int64_t owned_elements() const { return owned_at_.back(); }
  int64_t buffer_count() const { return static_cast<int64_t>(slots_.size()); }
  // Bytes read and written since creation (metrics: swap traffic).
  int64_t bytes_read() const { return bytes_read_; }
  int64_t bytes_written() const { return bytes_written_; }
  // Seconds spent waiting for I/O since the last call (the I/O the computation did not hide):
  // Acquire's waits for reads, and the whole of ReadRange's and WriteRange's transfers.
  double TakeWaitSeconds();

 private:
  struct Slot {
    offload::AlignedBuffer buffer;
    int unit = -1;  // the chunk it holds or is reading; -1: free
    offload::SwapEngine::Ticket read;
    bool acquired = false;
    int64_t started = 0;  // order of its read, for choosing which prefetch makes room
  };
  ParamSwap(std::vector<int64_t> chunks, int64_t elem_bytes, offload::SwapEngine* engine)
      : chunks_(std::move(chunks)), elem_(elem_bytes), engine_(engine) {}
  int SlotOf(int unit) const;
  int UnitOf(int64_t at) const;
  int64_t ChunkBytes(int unit) const { return offload::AlignUp(chunks_[unit] * elem_); }
  // Calls `move` for each chunk's part of owned range [at, at + n), with its file offset, its
  // bytes and the bytes of the range before it; the time counts as waiting.
  absl::Status ForEachByteRange(
      int64_t at, int64_t n,
      absl::FunctionRef<absl::Status(int64_t offset, int64_t bytes, int64_t done)> move);
  // Where owned element `at` of `unit` sits in the file.
  int64_t ByteOf(int unit, int64_t at) const {
    return file_offset_[unit] + (at - owned_at_[unit]) * elem_;
  }
  absl::Status CheckRange(int64_t at, int64_t n) const;
  absl::Status Timed(const offload::SwapEngine::Ticket& ticket);  // Wait, counted in wait_seconds_
  absl::Status Finish(Slot& slot);  // waits for its read; frees it on error
  void Free(Slot& slot);            // waits for its read, then frees it

  const std::vector<int64_t> chunks_;
  const int64_t elem_;
  offload::SwapEngine* const engine_;
  std::vector<int64_t> owned_at_;     // first owned element of each chunk, then the total
  std::vector<int64_t> file_offset_;  // where each chunk starts in the file
  std::unique_ptr<offload::SwapFile> file_;
  std::vector<Slot> slots_;
  offload::AlignedBuffer scratch_;  // ranges
  int64_t reads_started_ = 0;
  int64_t bytes_read_ = 0, bytes_written_ = 0;
  double wait_seconds_ = 0;
};

}  // namespace dstrain::zero
