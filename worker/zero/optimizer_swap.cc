#include "worker/zero/optimizer_swap.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status/status_macros.h"
#include "worker/offload/byte_range.h"

namespace dstrain::zero {

using offload::AlignUp;
using offload::SwapEngine;

int64_t OptimizerSwap::FileBytes(const std::vector<int64_t>& windows, int arrays) {
  int64_t bytes = 0;
  for (int64_t n : windows) bytes += arrays * AlignUp(n * 4);
  return bytes;
}

namespace {
int64_t Buffers(int64_t buffer_count, size_t windows) {
  return std::max<int64_t>(1, std::min<int64_t>(buffer_count, static_cast<int64_t>(windows)));
}
}  // namespace

int64_t OptimizerSwap::BufferBytes(const std::vector<int64_t>& windows, int arrays,
                                   int64_t buffer_count) {
  int64_t largest = 0;
  for (int64_t n : windows) largest = std::max(largest, arrays * AlignUp(n * 4));
  return Buffers(buffer_count, windows.size()) * (largest + offload::kIoAlign);
}

absl::StatusOr<std::unique_ptr<OptimizerSwap>> OptimizerSwap::Create(std::vector<int64_t> windows,
                                                                     Options options,
                                                                     SwapEngine* engine,
                                                                     const offload::SwapDir& dir,
                                                                     tensor::Allocator* host) {
  if (options.arrays < 1 || options.arrays > 3 || options.buffer_count < 1) {
    return absl::InvalidArgumentError(absl::StrCat("OptimizerSwap: ", options.arrays, " arrays, ",
                                                   options.buffer_count, " buffers"));
  }
  std::unique_ptr<OptimizerSwap> s(new OptimizerSwap(std::move(windows), options, engine));
  int64_t at = 0, offset = 0;
  for (int w = 0; w < static_cast<int>(s->windows_.size()); ++w) {
    s->window_at_.push_back(at);
    s->window_offset_.push_back(offset);
    at += s->windows_[w];
    offset += s->WindowBytes(w);
    s->window_bytes_max_ = std::max(s->window_bytes_max_, s->WindowBytes(w));
  }
  DT_ASSIGN_OR_RETURN(s->file_, offload::SwapFile::Create(dir.Join("optimizer.swp"), offset));
  s->buffer_count_ = Buffers(options.buffer_count, s->windows_.size());
  for (int64_t b = 0; b < s->buffer_count_; ++b) {
    DT_ASSIGN_OR_RETURN(offload::AlignedBuffer buf,
                        offload::AlignedBuffer::Allocate(host, s->window_bytes_max_,
                                                         tensor::MemoryCategory::kOptimizerState));
    s->buffers_.push_back(std::move(buf));
  }
  // fast_init: the file's unwritten extents already read as zeros; else write them.
  if (!options.fast_init) DT_RETURN_IF_ERROR(s->Zero());
  return s;
}

absl::Status OptimizerSwap::Wait(const SwapEngine::Ticket& t) {
  if (t == nullptr) return absl::OkStatus();
  const absl::Time start = absl::Now();
  absl::Status s = engine_->Wait(t);
  wait_ += absl::ToDoubleSeconds(absl::Now() - start);
  return s;
}

absl::Status OptimizerSwap::Update(const WindowFn& fn) {
  const absl::Time start = absl::Now();
  wait_ = 0;
  const int windows = static_cast<int>(windows_.size());
  const int buffers = static_cast<int>(buffer_count_);
  // Reads ahead: every buffer but the one updating and, when writes overlap, the one writing.
  const int lookahead =
      options_.pipeline_read ? std::max(0, buffers - 1 - (options_.pipeline_write ? 1 : 0)) : 0;
  std::vector<SwapEngine::Ticket> reads(buffers), writes(buffers);
  const offload::FileRef file = file_->ref();
  // Every transfer is waited for before returning, error or not: the buffers must outlive them.
  auto drain = [&](absl::Status status) {
    for (auto* tickets : {&reads, &writes}) {
      for (auto& t : *tickets) {
        absl::Status s = Wait(t);
        if (status.ok()) status = s;
        t = nullptr;
      }
    }
    return status;
  };
  // The reads the last Update started for this one (windows 0 .. n - 1, in buffers 0 .. n - 1).
  int issued = static_cast<int>(read_ahead_.size());
  for (int w = 0; w < issued; ++w) reads[w] = std::move(read_ahead_[w]);
  read_ahead_.clear();
  for (int w = 0; w < windows; ++w) {
    for (; issued < windows && issued <= w + lookahead; ++issued) {
      const int slot = issued % buffers;
      if (absl::Status s = Wait(writes[slot]); !s.ok()) return drain(s);
      writes[slot] = nullptr;
      reads[slot] =
          engine_->Read(file, window_offset_[issued], buffers_[slot].data(), WindowBytes(issued));
    }
    const int slot = w % buffers;
    if (absl::Status s = Wait(reads[slot]); !s.ok()) return drain(s);
    reads[slot] = nullptr;
    float* arrays[3] = {nullptr, nullptr, nullptr};
    for (int a = 0; a < options_.arrays; ++a) arrays[a] = ArrayIn(buffers_[slot].data(), w, a);
    if (absl::Status s = fn(w, arrays); !s.ok()) return drain(s);
    writes[slot] = engine_->Write(file, window_offset_[w], buffers_[slot].data(), WindowBytes(w));
    if (!options_.pipeline_write) {
      if (absl::Status s = Wait(writes[slot]); !s.ok()) return drain(s);
      writes[slot] = nullptr;
    }
  }
  absl::Status status = drain(absl::OkStatus());
  last_wait_ = wait_;
  last_total_ = absl::ToDoubleSeconds(absl::Now() - start);
  last_bytes_ = 2 * file_->size();  // every window in, then out
  if (status.ok()) StartReadAhead();
  return status;
}

OptimizerSwap::~OptimizerSwap() { DropReadAhead(); }  // the reads must not outlive the buffers

void OptimizerSwap::StartReadAhead() {
  if (!options_.pipeline_read) return;
  const int n = static_cast<int>(std::min<int64_t>(buffer_count_, windows_.size()));
  for (int w = 0; w < n; ++w) {
    read_ahead_.push_back(
        engine_->Read(file_->ref(), window_offset_[w], buffers_[w].data(), WindowBytes(w)));
  }
}

void OptimizerSwap::DropReadAhead() {
  for (SwapEngine::Ticket& t : read_ahead_) {
    if (t != nullptr) (void)engine_->Wait(t);  // a failed read is read again by the next Update
  }
  read_ahead_.clear();
}

int OptimizerSwap::WindowOf(int64_t at) const {
  const auto it = std::upper_bound(window_at_.begin(), window_at_.end(), at);
  return static_cast<int>(it - window_at_.begin()) - 1;
}

OptimizerSwap::Span OptimizerSwap::SpanOf(int a, int64_t at, int64_t n) const {
  const int w = WindowOf(at);
  const int64_t within = at - window_at_[w];
  // The block-aligned bytes of the array holding elements [within, within + len), at most one
  // buffer's worth, so a range costs its own bytes and not its window's.
  const int64_t lo = within * 4 / offload::kIoAlign * offload::kIoAlign;
  const int64_t max_len = (window_bytes_max_ - (within * 4 - lo)) / 4;
  const int64_t len = std::min({n, windows_[w] - within, max_len});
  const int64_t hi = std::min(ArrayBytes(w), AlignUp((within + len) * 4));
  return Span{w, within, len, window_offset_[w] + a * ArrayBytes(w) + lo, hi - lo, within * 4 - lo};
}

absl::Status OptimizerSwap::CheckRange(int a, int64_t at, int64_t n) const {
  const int64_t total = window_at_.empty() ? 0 : window_at_.back() + windows_.back();
  if (a < 0 || a >= options_.arrays || at < 0 || n < 0 || at + n > total) {
    return absl::InternalError(absl::StrCat("OptimizerSwap: array ", a, ", elements [", at, ", ",
                                            at + n, ") are outside the swapped state"));
  }
  return absl::OkStatus();
}

absl::Status OptimizerSwap::ReadRange(int a, int64_t at, int64_t n, float* dst) {
  DT_RETURN_IF_ERROR(CheckRange(a, at, n));
  while (n > 0) {
    DT_ASSIGN_OR_RETURN(const absl::Span<const float> chunk, ReadChunk(a, at, n));
    std::memcpy(dst, chunk.data(), chunk.size() * sizeof(float));
    dst += chunk.size();
    at += static_cast<int64_t>(chunk.size());
    n -= static_cast<int64_t>(chunk.size());
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const float>> OptimizerSwap::ReadChunk(int a, int64_t at, int64_t max_n) {
  DropReadAhead();
  DT_RETURN_IF_ERROR(CheckRange(a, at, std::min<int64_t>(max_n, 1)));
  if (max_n < 1) return absl::InternalError("OptimizerSwap::ReadChunk: nothing asked for");
  const int64_t total = window_at_.back() + windows_.back();
  const Span s = SpanOf(a, at, std::min(max_n, total - at));
  char* buf = buffers_[0].data();
  DT_RETURN_IF_ERROR(Wait(engine_->Read(file_->ref(), s.offset, buf, s.bytes)));
  return absl::Span<const float>(reinterpret_cast<const float*>(buf + s.skip), s.len);
}

absl::Status OptimizerSwap::WriteRange(int a, int64_t at, int64_t n, const float* src) {
  DropReadAhead();
  DT_RETURN_IF_ERROR(CheckRange(a, at, n));
  while (n > 0) {  // within a window an array's elements are contiguous in the file
    const int w = WindowOf(at);
    const int64_t within = at - window_at_[w];
    const int64_t len = std::min(n, windows_[w] - within);
    DT_RETURN_IF_ERROR(offload::WriteBytes(*engine_, file_->ref(),
                                           window_offset_[w] + a * ArrayBytes(w) + within * 4,
                                           len * 4, src, buffers_[0]));
    src += len;
    at += len;
    n -= len;
  }
  return absl::OkStatus();
}

absl::Status OptimizerSwap::Zero() {
  DropReadAhead();
  std::memset(buffers_[0].data(), 0, buffers_[0].size());
  for (int w = 0; w < static_cast<int>(windows_.size()); ++w) {
    DT_RETURN_IF_ERROR(
        Wait(engine_->Write(file_->ref(), window_offset_[w], buffers_[0].data(), WindowBytes(w))));
  }
  return absl::OkStatus();
}

absl::StatusOr<offload::Bandwidth> OptimizerSwap::SelfTest(int64_t max_bytes) {
  DropReadAhead();
  offload::Bandwidth bw;
  const offload::FileRef file = file_->ref();
  int windows = 0;
  while (windows < static_cast<int>(windows_.size()) &&
         (windows == 0 || bw.bytes + WindowBytes(windows) <= max_bytes)) {
    bw.bytes += WindowBytes(windows++);
  }
  if (bw.bytes == 0) return bw;
  for (offload::AlignedBuffer& b : buffers_) std::memset(b.data(), 0, b.size());
  // Every buffer in flight at once, round after round, in each direction.
  auto pass = [&](bool write) -> absl::StatusOr<double> {
    const absl::Time start = absl::Now();
    std::vector<SwapEngine::Ticket> tickets(buffers_.size());
    absl::Status status;
    for (int w = 0; w < windows; ++w) {
      auto& t = tickets[w % tickets.size()];
      if (absl::Status s = Wait(t); status.ok()) status = s;
      char* buf = buffers_[w % buffers_.size()].data();
      t = write ? engine_->Write(file, window_offset_[w], buf, WindowBytes(w))
                : engine_->Read(file, window_offset_[w], buf, WindowBytes(w));
    }
    for (auto& t : tickets) {
      if (absl::Status s = Wait(t); status.ok()) status = s;
    }
    if (write && status.ok() && ::fdatasync(file.fd) != 0) {
      status = absl::InternalError(absl::StrCat(file.path, ": fdatasync failed"));
    }
    if (!status.ok()) return status;
    return absl::ToDoubleSeconds(absl::Now() - start);
  };
  DT_ASSIGN_OR_RETURN(const double write_s, pass(true));
  DT_ASSIGN_OR_RETURN(const double read_s, pass(false));
  for (const offload::AlignedBuffer& b : buffers_) {
    for (int64_t i = 0; i < b.size(); ++i) {
      if (b.data()[i] != 0) {
        return absl::DataLossError(
            absl::StrCat(file.path, ": the self-test read back bytes it did not write"));
      }
    }
  }
  bw.write_mb_s = bw.bytes / 1e6 / std::max(1e-9, write_s);
  bw.read_mb_s = bw.bytes / 1e6 / std::max(1e-9, read_s);
  return bw;
}

}  // namespace dstrain::zero
