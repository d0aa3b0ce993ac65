#include "worker/offload/swap_engine.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace dstrain::offload {

struct SwapEngine::Transfer {
  FileRef file;
  bool write = false;
  std::mutex mu;
  std::condition_variable done_cv;
  int64_t blocks_left = 0;  // guarded by mu
  absl::Status status;      // guarded by mu: the first error
  bool failed = false;      // guarded by mu (read without it as a hint only)

  void Finish(absl::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    if (!s.ok() && status.ok()) {
      status = std::move(s);
      failed = true;
    }
    if (--blocks_left == 0) done_cv.notify_all();
  }
  bool Failed() {
    std::lock_guard<std::mutex> lock(mu);
    return failed;
  }
};

SwapEngine::Options SwapEngine::OptionsFromAio(const config::AioConfig& aio) {
  Options o;
  o.block_size = aio.block_size;
  o.queue_depth = aio.queue_depth;
  o.threads = aio.intra_op_parallelism;
  o.single_submit = aio.single_submit;
  o.overlap_events = aio.overlap_events;
  return o;
}

absl::StatusOr<std::unique_ptr<SwapEngine>> SwapEngine::Create(Options options) {
  if (options.block_size <= 0 || options.block_size % kIoAlign != 0 ||
      options.block_size > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("aio.block_size: ", options.block_size,
                                                   " is not a multiple of ", kIoAlign,
                                                   " up to 1 GiB"));
  }
  if (options.queue_depth < 1 || options.queue_depth > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("aio.queue_depth: ", options.queue_depth, " is not in 1..4096"));
  }
  if (options.threads < 1 || options.threads > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("aio.intra_op_parallelism: ", options.threads, " is not in 1..64"));
  }
  std::unique_ptr<SwapEngine> e(new SwapEngine(std::move(options)));
  for (int i = 0; i < e->options_.threads; ++i) {
    std::unique_ptr<IoQueue> q;
    if (e->options_.make_queue) {
      DT_ASSIGN_OR_RETURN(q, e->options_.make_queue(e->options_.queue_depth));
    } else {
      auto uring = NewUringQueue(e->options_.queue_depth);
      q = uring.ok() ? std::move(*uring) : NewSyncQueue(e->options_.queue_depth);
    }
    e->backend_ = q->name();
    e->queues_.push_back(std::move(q));
  }
  e->pending_.resize(e->queues_.size());
  for (size_t i = 0; i < e->queues_.size(); ++i) {
    e->threads_.emplace_back([eng = e.get(), i] { eng->Run(i); });
  }
  return e;
}

SwapEngine::~SwapEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

SwapEngine::Ticket SwapEngine::Read(const FileRef& file, int64_t offset, void* buf, int64_t len) {
  return Start(file, false, static_cast<char*>(buf), offset, len);
}

SwapEngine::Ticket SwapEngine::Write(const FileRef& file, int64_t offset, const void* buf,
                                     int64_t len) {
  // The engine only reads from a write's buffer.
  return Start(file, true, const_cast<char*>(static_cast<const char*>(buf)), offset, len);
}

SwapEngine::Ticket SwapEngine::Start(const FileRef& file, bool write, char* buf, int64_t offset,
                                     int64_t len) {
  auto t = std::make_shared<Transfer>();
  t->file = file;
  t->write = write;
  if (len <= 0) {
    t->blocks_left = 0;
    return t;
  }
  if (reinterpret_cast<uintptr_t>(buf) % kIoAlign != 0 || offset % kIoAlign != 0 ||
      len % kIoAlign != 0) {
    t->status = absl::InvalidArgumentError(absl::StrCat(file.path, ": ", write ? "write" : "read",
                                                        " of ", len, " bytes at offset ", offset,
                                                        " is not aligned to ", kIoAlign));
    t->failed = true;
    return t;
  }
  const int64_t n = (len + options_.block_size - 1) / options_.block_size;
  t->blocks_left = n;
  {
    // Each I/O thread takes a contiguous run of the blocks: one sequential stream per thread, as
    // the disk serves best (blocks dealt out in turn would make one stream out of every thread's).
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t threads = static_cast<int64_t>(pending_.size());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t at = i * options_.block_size;
      pending_[i * threads / n].push_back(
          {t, buf + at, offset + at, std::min(options_.block_size, len - at)});
    }
  }
  work_cv_.notify_all();
  return t;
}

absl::Status SwapEngine::Wait(const Ticket& t) {
  if (t == nullptr) return absl::OkStatus();
  std::unique_lock<std::mutex> lock(t->mu);
  t->done_cv.wait(lock, [&] { return t->blocks_left <= 0; });
  return t->status;
}

bool SwapEngine::Done(const Ticket& t) {
  if (t == nullptr) return true;
  std::lock_guard<std::mutex> lock(t->mu);
  return t->blocks_left <= 0;
}

int64_t SwapEngine::bytes_read() const {
  std::lock_guard<std::mutex> lock(const_cast<std::mutex&>(mu_));
  return bytes_read_;
}

int64_t SwapEngine::bytes_written() const {
  std::lock_guard<std::mutex> lock(const_cast<std::mutex&>(mu_));
  return bytes_written_;
}

namespace {

absl::Status IoError(const FileRef& file, bool write, int64_t offset, int64_t result) {
  const std::string what =
      absl::StrCat(file.path, ": ", write ? "write" : "read", " at offset ", offset, ": ");
  if (result == 0) {
    return write ? absl::InternalError(absl::StrCat(what, "no bytes written"))
                 : absl::DataLossError(absl::StrCat(what, "end of file"));
  }
  const int err = static_cast<int>(-result);
  const std::string text = absl::StrCat(what, std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(text);
  return absl::InternalError(text);
}

}  // namespace

// I/O thread `index`: takes blocks from its queue, keeps up to depth() in flight, finishes short
// transfers with further requests and reports each block's end to its transfer.
void SwapEngine::Run(size_t index) {
  IoQueue* queue = queues_[index].get();
  std::deque<Block>& pending = pending_[index];
  std::unordered_map<uint64_t, Block> in_flight;
  uint64_t next_tag = 0;
  const int depth = queue->depth();
  auto fail_all = [&](const absl::Status& s) {
    for (auto& [tag, b] : in_flight) b.transfer->Finish(s);
    in_flight.clear();
  };
  for (;;) {
    std::vector<Block> taken;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (in_flight.empty()) {
        work_cv_.wait(lock, [&] { return stopping_ || !pending.empty(); });
        if (pending.empty() && stopping_) return;
      }
      // aio.overlap_events false: a new batch only once the previous one has completed.
      const bool may_take = options_.overlap_events || in_flight.empty();
      while (may_take && static_cast<int>(in_flight.size() + taken.size()) < depth &&
             !pending.empty()) {
        taken.push_back(std::move(pending.front()));
        pending.pop_front();
      }
    }
    absl::Status submitted;
    for (Block& b : taken) {
      // An earlier block of the transfer failed, or a submission did: the rest is not attempted.
      if (!submitted.ok() || b.transfer->Failed()) {
        b.transfer->Finish(submitted);
        continue;
      }
      const uint64_t tag = next_tag++;
      queue->Prepare({b.transfer->file.fd, b.transfer->write, b.buf, static_cast<uint32_t>(b.len),
                      b.offset, tag});
      in_flight.emplace(tag, std::move(b));
      if (options_.single_submit) {
        submitted = queue->Submit();
        if (!submitted.ok()) fail_all(submitted);
      }
    }
    if (!options_.single_submit && !in_flight.empty() && !taken.empty()) {
      submitted = queue->Submit();
      if (!submitted.ok()) fail_all(submitted);
    }
    if (in_flight.empty()) continue;
    absl::StatusOr<std::vector<IoCompletion>> done = queue->Reap();
    if (!done.ok()) {
      fail_all(done.status());
      continue;
    }
    int64_t read = 0, written = 0;
    for (const IoCompletion& c : *done) {
      auto it = in_flight.find(c.tag);
      if (it == in_flight.end()) continue;
      Block b = std::move(it->second);
      in_flight.erase(it);
      if (c.result <= 0) {
        b.transfer->Finish(IoError(b.transfer->file, b.transfer->write, b.offset, c.result));
        continue;
      }
      (b.transfer->write ? written : read) += c.result;
      if (c.result < b.len) {
        // Short: ask again for the rest, ahead of everything queued.
        b.buf += c.result;
        b.offset += c.result;
        b.len -= c.result;
        std::lock_guard<std::mutex> lock(mu_);
        pending.push_front(std::move(b));
        continue;
      }
      b.transfer->Finish(absl::OkStatus());
    }
    std::lock_guard<std::mutex> lock(mu_);
    bytes_read_ += read;
    bytes_written_ += written;
  }
}

}  // namespace dstrain::offload
