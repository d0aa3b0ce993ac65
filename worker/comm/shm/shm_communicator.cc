#include "worker/comm/shm/shm_communicator.h"

#include <sys/mman.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status/status_macros.h"
#include "worker/comm/shm/algorithms.h"
#include "worker/comm/shm/p2p.h"
#include "worker/comm/shm/segment.h"
#include "worker/comm/shm/shared_file.h"
#include "worker/comm/shm/steps.h"
#include "worker/comm/shm/windows.h"
#include "worker/store/prefix_store.h"

namespace dstrain::comm {

using shm_internal::Segment;
using shm_internal::Steps;

absl::StatusOr<std::unique_ptr<ShmCommunicator>> ShmCommunicator::Create(
    store::Store* store, int rank, int size, absl::string_view name, const ShmOptions& options) {
  if (store == nullptr) return absl::InvalidArgumentError("ShmCommunicator: null store");
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("ShmCommunicator: rank ", rank, " of ", size, " is not a valid rank"));
  }
  if (name.empty()) return absl::InvalidArgumentError("ShmCommunicator: empty group name");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ShmCommunicator: timeout must be positive");
  }
  return Join(store, absl::StrCat("shm/", name), rank, size, std::string(name), options);
}

absl::StatusOr<std::unique_ptr<ShmCommunicator>> ShmCommunicator::Join(store::Store* store,
                                                                       std::string prefix, int rank,
                                                                       int size, std::string name,
                                                                       const ShmOptions& options) {
  const std::string who =
      absl::StrCat("ShmCommunicator: joining group '", name, "' as rank ", rank, " of ", size);
  shm_internal::SegmentOptions segment_options;
  segment_options.chunk_bytes = options.chunk_bytes;
  segment_options.ring_bytes = options.ring_bytes;
  DT_ASSIGN_OR_RETURN(
      std::unique_ptr<Segment> segment,
      Segment::Join(store, prefix, rank, size, who, segment_options, options.timeout));
  return std::unique_ptr<ShmCommunicator>(new ShmCommunicator(
      store, std::move(prefix), rank, size, std::move(name), options, std::move(segment)));
}

ShmCommunicator::ShmCommunicator(store::Store* store, std::string prefix, int rank, int size,
                                 std::string name, const ShmOptions& options,
                                 std::unique_ptr<Segment> segment)
    : store_(store),
      prefix_(std::move(prefix)),
      rank_(rank),
      size_(size),
      name_(std::move(name)),
      options_(options),
      segment_(std::move(segment)),
      steps_(std::make_unique<Steps>(segment_.get(), rank)),
      windows_(std::make_shared<shm_internal::Windows>(rank)) {
  p2p_ = std::make_unique<shm_internal::PointToPoint>(
      segment_.get(), rank, [this](const absl::Status& error) { return Poison(error); });
  worker_ = std::thread([this] { WorkerLoop(); });
}

ShmCommunicator::~ShmCommunicator() {
  bool busy;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    busy = running_ || !queue_.empty();
  }
  if (busy) Abort(absl::AbortedError("communicator destroyed"));
  worker_.join();
  p2p_.reset();  // fails pending Send/Recv, joins the progress thread
  segment_.reset();
}

std::string ShmCommunicator::Describe(absl::string_view op, int64_t seq) const {
  std::string s = absl::StrCat(op, " on group '", name_, "' (rank ", rank_, " of ", size_);
  if (seq >= 0) absl::StrAppend(&s, ", op #", seq);
  return absl::StrCat(s, ")");
}

absl::Status ShmCommunicator::Poison(const absl::Status& error) {
  absl::Status first;
  {
    absl::MutexLock lock(&mu_);
    if (error_.ok()) {
      error_ = error;
      segment_->Fail(rank_, error.message());
    }
    first = error_;
  }
  aborted_.store(true, std::memory_order_release);
  p2p_->FailAll(first);
  return first;
}

void ShmCommunicator::Abort(absl::Status reason) {
  Poison(absl::AbortedError(absl::StrCat(Describe("Abort"), ": aborted: ",
                                         reason.message().empty()
                                             ? absl::StatusCodeToString(reason.code())
                                             : std::string(reason.message()))))
      .IgnoreError();
}

absl::Status ShmCommunicator::AsyncError() {
  absl::MutexLock lock(&mu_);
  return error_;
}

absl::StatusOr<std::unique_ptr<Work>> ShmCommunicator::Enqueue(absl::string_view op,
                                                               absl::Duration timeout, Body body) {
  auto work = std::make_shared<WorkState>();
  absl::MutexLock lock(&mu_);
  if (!error_.ok()) {
    return absl::AbortedError(
        absl::StrCat(Describe(op), ": communicator is poisoned: ", error_.message()));
  }
  Op entry;
  entry.name = std::string(op);
  entry.seq = next_seq_++;
  entry.timeout = timeout;
  entry.body = std::move(body);
  entry.work = work;
  queue_.push_back(std::move(entry));
  return std::unique_ptr<Work>(new CompletionWork(std::move(work)));
}

void ShmCommunicator::WorkerLoop() {
  for (;;) {
    Op op;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ShmCommunicator* c)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) { return !c->queue_.empty() || c->stop_; },
          this));
      if (queue_.empty()) return;
      op = std::move(queue_.front());
      queue_.pop_front();
      running_ = true;
    }
    RunOp(op);
    absl::MutexLock lock(&mu_);
    running_ = false;
  }
}

void ShmCommunicator::RunOp(Op& op) {
  {
    absl::MutexLock lock(&mu_);
    if (!error_.ok()) {
      op.work->Complete(absl::AbortedError(absl::StrCat(
          Describe(op.name, op.seq), ": communicator is poisoned: ", error_.message())));
      return;
    }
  }
  absl::Status status;
  if (std::optional<std::string> failure = segment_->Failure()) {
    status = absl::AbortedError(*failure);
  } else {
    shm_internal::WaitBounds bounds;
    bounds.segment = segment_.get();
    bounds.aborted = &aborted_;
    bounds.deadline = absl::Now() + op.timeout;
    bounds.timeout = op.timeout;
    steps_->set_bounds(bounds);
    status = op.body(*steps_);
  }
  if (status.ok()) {
    op.work->Complete(absl::OkStatus());
    return;
  }
  const absl::Status mine(status.code(),
                          absl::StrCat(Describe(op.name, op.seq), ": ", status.message()));
  const absl::Status first = Poison(mine);
  if (first.message() == mine.message()) {
    op.work->Complete(mine);
  } else {
    op.work->Complete(absl::AbortedError(
        absl::StrCat(Describe(op.name, op.seq), ": communicator is poisoned: ", first.message())));
  }
}

namespace {

int64_t Bytes(const CommBuffer& b) { return b.count * static_cast<int64_t>(DTypeSize(b.dtype)); }

// Every rank's address of `buffer` when it lies in a shared window on every rank (the step then
// ends with Steps::Finish); nothing when it does not, or is too small to be worth the step, or
// the group had allocated no window when the collective was called (which every rank decides
// alike: the byte counts agree, and allocations are ordered with the collectives).
absl::StatusOr<std::optional<std::vector<char*>>> SharedPlaces(Steps& steps,
                                                               const shm_internal::Windows& windows,
                                                               bool any_window,
                                                               const CommBuffer& buffer) {
  if (!any_window || Bytes(buffer) < shm_internal::kSharedMinBytes) return std::nullopt;
  return shm_internal::AgreeOnWindows(steps, windows, buffer.data, Bytes(buffer));
}

// This rank's part of a window; unmapped (the whole window, from this rank) when destroyed.
class SharedHostBuffer final : public HostBuffer {
 public:
  SharedHostBuffer(std::shared_ptr<shm_internal::Windows> windows, int64_t id,
                   shm_internal::SharedMapping mapping, char* data, int64_t bytes)
      : windows_(std::move(windows)), id_(id), mapping_(mapping), data_(data), bytes_(bytes) {}
  ~SharedHostBuffer() override {
    windows_->Remove(id_);
    munmap(mapping_.base, mapping_.bytes);
  }
  void* data() const override { return data_; }
  int64_t bytes() const override { return bytes_; }

 private:
  const std::shared_ptr<shm_internal::Windows> windows_;
  const int64_t id_;
  const shm_internal::SharedMapping mapping_;
  char* const data_;
  const int64_t bytes_;
};

}  // namespace

bool ShmCommunicator::AnyWindow() {
  absl::MutexLock lock(&mu_);
  return next_window_ > 0;
}

absl::StatusOr<std::unique_ptr<HostBuffer>> ShmCommunicator::AllocateHostBuffer(
    int64_t bytes, const CommOptions& options) {
  if (!options_.shared_buffers || bytes < 0) {
    return Communicator::AllocateHostBuffer(bytes, options);
  }
  DT_RETURN_IF_ERROR(CheckOptions(*this, "AllocateHostBuffer", options));
  int64_t id;
  {
    absl::MutexLock lock(&mu_);
    if (!error_.ok()) {
      return absl::AbortedError(absl::StrCat(Describe("AllocateHostBuffer"),
                                             ": communicator is poisoned: ", error_.message()));
    }
    id = next_window_++;  // every rank allocates in the same order: the ids agree
  }
  // Parts start on pages of their own (and so on cache lines of their own).
  const int64_t part = std::max<int64_t>(4096, (bytes + 4095) / 4096 * 4096);
  store::PrefixStore scope(prefix_, store_);
  DT_ASSIGN_OR_RETURN(
      const shm_internal::SharedMapping m,
      shm_internal::MapGroupFile(scope, absl::StrCat("window/", id), rank_, size_,
                                 Describe(absl::StrCat("AllocateHostBuffer(", bytes, " bytes)")),
                                 static_cast<size_t>(part) * size_, options.timeout, [](char*) {}));
  windows_->Add(id, m.base, part);
  return std::unique_ptr<HostBuffer>(
      new SharedHostBuffer(windows_, id, m, m.base + rank_ * part, bytes));
}

absl::StatusOr<std::unique_ptr<Work>> ShmCommunicator::EnqueueSharedOrStaged(
    absl::string_view op, absl::Duration timeout, const CommBuffer& probe, SharedBody shared,
    Body staged) {
  return Enqueue(op, timeout,
                 [this, any_window = AnyWindow(), probe, shared = std::move(shared),
                  staged = std::move(staged)](Steps& steps) -> absl::Status {
                   DT_ASSIGN_OR_RETURN(const auto at,
                                       SharedPlaces(steps, *windows_, any_window, probe));
                   if (!at.has_value()) return staged(steps);
                   ++shared_collectives_;
                   return shared(steps, *at);
                 });
}

absl::StatusOr<std::unique_ptr<Work>> ShmCommunicator::AllReduce(CommBuffer buffer, ReduceOp op,
                                                                 const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckAllReduceArgs(*this, buffer, options, DeviceType::kCpu));
  if (size_ == 1)
    return Enqueue("AllReduce", options.timeout, [](Steps&) { return absl::OkStatus(); });
  return EnqueueSharedOrStaged(
      "AllReduce", options.timeout, buffer,
      [buffer, op](Steps& steps, const std::vector<char*>& at) {
        return shm_internal::RunAllReduceShared(steps, at, buffer, op);
      },
      [buffer, op](Steps& steps) { return shm_internal::RunAllReduce(steps, buffer, op); });
}

absl::StatusOr<std::unique_ptr<Work>> ShmCommunicator::ReduceScatter(CommBuffer input,
                                                                     CommBuffer output, ReduceOp op,
                                                                     const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckReduceScatterArgs(*this, input, output, options, DeviceType::kCpu));
  return EnqueueSharedOrStaged(
      "ReduceScatter", options.timeout, input,
      [input, output, op](Steps& steps, const std::vector<char*>& at) {
        return shm_internal::RunReduceScatterShared(steps, at, input, output, op);
      },
      [input, output, op](Steps& steps) {
        return shm_internal::RunReduceScatter(steps, input, output, op);
      });
}

absl::StatusOr<std::unique_ptr<Work>> ShmCommunicator::AllGather(CommBuffer input,
                                                                 CommBuffer output,
                                                                 const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckAllGatherArgs(*this, input, output, options, DeviceType::kCpu));
  return EnqueueSharedOrStaged(
      "AllGather", options.timeout, input,
      [input, output](Steps& steps, const std::vector<char*>& at) {
        return shm_internal::RunAllGatherShared(steps, at, input, output);
      },
      [input, output](Steps& steps) { return shm_internal::RunAllGather(steps, input, output); });
}

absl::StatusOr<std::unique_ptr<Work>> ShmCommunicator::Broadcast(CommBuffer buffer, int root,
                                                                 const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckBroadcastArgs(*this, buffer, root, options, DeviceType::kCpu));
  return Enqueue("Broadcast", options.timeout, [buffer, root](Steps& steps) {
    return shm_internal::RunBroadcast(steps, buffer, root);
  });
}

absl::StatusOr<std::unique_ptr<Work>> ShmCommunicator::Send(CommBuffer buffer, int dst, int tag,
                                                            const CommOptions& options) {
  DT_RETURN_IF_ERROR(
      CheckPointToPointArgs(*this, "Send", buffer, dst, "dst", options, DeviceType::kCpu));
  return p2p_->Post(/*send=*/true, buffer, dst, tag, options.timeout,
                    absl::StrCat(Describe("Send"), " to rank ", dst, ", tag ", tag));
}

absl::StatusOr<std::unique_ptr<Work>> ShmCommunicator::Recv(CommBuffer buffer, int src, int tag,
                                                            const CommOptions& options) {
  DT_RETURN_IF_ERROR(
      CheckPointToPointArgs(*this, "Recv", buffer, src, "src", options, DeviceType::kCpu));
  return p2p_->Post(/*send=*/false, buffer, src, tag, options.timeout,
                    absl::StrCat(Describe("Recv"), " from rank ", src, ", tag ", tag));
}

absl::StatusOr<std::unique_ptr<Work>> ShmCommunicator::Barrier(const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckOptions(*this, "Barrier", options));
  return Enqueue("Barrier", options.timeout,
                 [](Steps& steps) { return shm_internal::RunBarrier(steps); });
}

absl::StatusOr<std::unique_ptr<Communicator>> ShmCommunicator::Split(const std::vector<int>& ranks,
                                                                     absl::string_view name,
                                                                     const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckSplitRanks(*this, ranks, name));
  DT_RETURN_IF_ERROR(CheckOptions(*this, "Split", options));
  int64_t k;
  {
    absl::MutexLock lock(&mu_);
    if (!error_.ok()) {
      return absl::AbortedError(absl::StrCat(Describe(absl::StrCat("Split('", name, "')")),
                                             ": communicator is poisoned: ", error_.message()));
    }
    k = next_split_++;  // counted by every rank, member or not, so the prefix agrees
  }
  auto it = std::find(ranks.begin(), ranks.end(), rank_);
  if (it == ranks.end()) return std::unique_ptr<Communicator>();
  ShmOptions child = options_;
  child.timeout = options.timeout;
  DT_ASSIGN_OR_RETURN(std::unique_ptr<ShmCommunicator> c,
                      Join(store_, absl::StrCat(prefix_, "/split/", k, "/", name),
                           static_cast<int>(it - ranks.begin()), static_cast<int>(ranks.size()),
                           std::string(name), child));
  return std::unique_ptr<Communicator>(std::move(c));
}

}  // namespace dstrain::comm
