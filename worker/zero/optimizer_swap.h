// OptimizerSwap: ZeRO-Infinity's optimizer state on NVMe (docs/offload.md, "Layout and the
// update"). The arrays a rank's optimizer keeps for its owned elements — fp32 master weights under
// mixed precision, then Adam's m and v — live in one O_DIRECT file, cut into the windows the update
// walks (sub-groups of at most sub_group_size elements). A window's arrays sit back to back in the
// file, each aligned to kIoAlign, so one read brings the window in:
//
//   file: | window 0: a0 | a1 | a2 | window 1: a0 | a1 | a2 | ...      (a: the arrays)
//
// Update walks the windows through `buffer_count` buffers: with pipeline_read the next windows'
// reads are in flight while one updates, with pipeline_write a window's write-back overlaps the
// next update (DeepSpeed's keys of the same names); without them each read and write is waited
// for. With pipeline_read the first windows' reads are also issued as soon as an Update ends, so
// they run behind the next step's forward and backward; a call that touches the file or the
// buffers between steps (ReadRange, WriteRange, ReadChunk, Zero, SelfTest) first waits for those
// reads and drops them, so no read-ahead ever carries stale bytes. The bits are those of the
// resident update: the same elementwise kernel on the same windows. An I/O error fails Update with
// the file and offset; the file is then partly updated, and the caller fails the step (the job
// resumes from its last checkpoint). Not thread-safe; one ZeroState drives it between and during
// steps.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/offload/aligned_buffer.h"
#include "worker/offload/swap_engine.h"
#include "worker/offload/swap_file.h"
#include "worker/tensor/allocator.h"
#include "worker/zero/optimizer_home.h"

namespace dstrain::zero {

class OptimizerSwap final : public OptimizerHome {
 public:
  struct Options {
    int arrays = 2;  // 2 (fp32: m, v) or 3 (mixed: master, m, v)
    int64_t buffer_count = 4;
    bool pipeline_read = false;
    bool pipeline_write = false;
    bool fast_init = false;  // skip writing zeros: fallocate's unwritten extents read as zeros
  };
  // The file's size for windows of these lengths (elements), for the space check at start.
  static int64_t FileBytes(const std::vector<int64_t>& windows, int arrays);
  // Its buffers' bytes in host memory as the allocator counts them (kOptimizerState):
  // min(buffer_count, windows) buffers of the largest window, each with a page to align it.
  static int64_t BufferBytes(const std::vector<int64_t>& windows, int arrays, int64_t buffer_count);
  // Creates the swap file in `dir` and its buffers from `host` (kOptimizerState). `engine` and
  // `dir` outlive it.
  static absl::StatusOr<std::unique_ptr<OptimizerSwap>> Create(std::vector<int64_t> windows,
                                                               Options options,
                                                               offload::SwapEngine* engine,
                                                               const offload::SwapDir& dir,
                                                               tensor::Allocator* host);

  // For each window in order: its arrays in memory (arrays[a] holds windows()[w] floats), then
  // written back.
  absl::Status Update(const WindowFn& fn) override;
  ~OptimizerSwap() override;

  // Between steps: floats [at, at + n) of array `a` in the owned space, out of or into host
  // memory, moving only the blocks the range covers (a block covered in part is read before it
  // is written).
  absl::Status ReadRange(int a, int64_t at, int64_t n, float* dst) override;
  absl::Status WriteRange(int a, int64_t at, int64_t n, const float* src) override;
  // Between steps, for streaming a checkpoint out without another copy in memory: the next
  // elements of array `a` from `at` (at most `max_n`, at least one), in the swap's own buffer,
  // valid until the next call on this OptimizerSwap.
  absl::StatusOr<absl::Span<const float>> ReadChunk(int a, int64_t at, int64_t max_n) override;
  // Every array zero.
  absl::Status Zero() override;
  config::OffloadDevice device() const override { return config::OffloadDevice::kNvme; }
  // The start-up self-test: zeros written over the file's first windows (at least one, up to
  // `max_bytes`) with every buffer in flight, synced, then read back and checked. Only at start:
  // it overwrites the state with zeros.
  absl::StatusOr<offload::Bandwidth> SelfTest(int64_t max_bytes);

  const std::vector<int64_t>& windows() const override { return windows_; }
  int64_t file_bytes() const { return file_->size(); }
  int64_t buffer_count() const { return buffer_count_; }
  int64_t buffer_bytes() const { return buffer_count_ * window_bytes_max_; }
  // Seconds the last Update waited for I/O (what the computation did not hide) and its total.
  double last_wait_seconds() const override { return last_wait_; }
  double last_update_seconds() const { return last_total_; }
  // Bytes the last Update read and wrote (each window's arrays in and out).
  int64_t last_update_bytes() const { return last_bytes_; }

 private:
  OptimizerSwap(std::vector<int64_t> windows, Options options, offload::SwapEngine* engine)
      : windows_(std::move(windows)), options_(options), engine_(engine) {}
  int64_t ArrayBytes(int w) const { return offload::AlignUp(windows_[w] * 4); }
  int64_t WindowBytes(int w) const { return options_.arrays * ArrayBytes(w); }
  float* ArrayIn(char* buffer, int w, int a) const {
    return reinterpret_cast<float*>(buffer + a * ArrayBytes(w));
  }
  // The window holding owned element `at`.
  int WindowOf(int64_t at) const;
  // Where elements [at, at + len) of array `a` sit in the file, for one transfer: `len` is at
  // most n, within one window and one buffer; `bytes` from `offset` cover them in whole blocks,
  // the first element `skip` bytes in.
  struct Span {
    int w;
    int64_t within, len, offset, bytes, skip;
  };
  Span SpanOf(int a, int64_t at, int64_t n) const;
  absl::Status CheckRange(int a, int64_t at, int64_t n) const;
  absl::Status Wait(const offload::SwapEngine::Ticket& t);
  // With pipeline_read, after an Update: the reads of windows 0 .. buffers - 1 into buffers of
  // the same numbers, for the next Update (read_ahead_).
  void StartReadAhead();
  // Waits for the read-ahead and forgets it (a read that failed is done again by the next Update):
  // before anything else uses the buffers or changes the file. An Update that takes the
  // read-ahead over reports its errors instead.
  void DropReadAhead();

  const std::vector<int64_t> windows_;
  std::vector<int64_t> window_at_;      // first owned element of each window
  std::vector<int64_t> window_offset_;  // file offset of each window
  const Options options_;
  offload::SwapEngine* const engine_;
  std::unique_ptr<offload::SwapFile> file_;
  int64_t buffer_count_ = 0;
  int64_t window_bytes_max_ = 0;
  std::vector<offload::AlignedBuffer> buffers_;
  std::vector<offload::SwapEngine::Ticket> read_ahead_;  // [w] for windows 0 .. size - 1
  double last_wait_ = 0, last_total_ = 0;
  int64_t last_bytes_ = 0;
  double wait_ = 0;
};

}  // namespace dstrain::zero
