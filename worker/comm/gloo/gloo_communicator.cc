#include "worker/comm/gloo/gloo_communicator.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_macros.h"
#include "gloo/rendezvous/context.h"
#include "gloo/transport/tcp/device.h"
#include "gloo/transport/unbound_buffer.h"
#include "worker/comm/completion_work.h"
#include "worker/comm/gloo/algorithm.h"
#include "worker/comm/gloo/allgather_ring.h"
#include "worker/comm/gloo/allreduce_ring.h"
#include "worker/comm/gloo/barrier.h"
#include "worker/comm/gloo/broadcast.h"
#include "worker/comm/gloo/failure_records.h"
#include "worker/comm/gloo/gloo_store_adapter.h"
#include "worker/comm/gloo/reduce_scatter_ring.h"
#include "worker/comm/gloo/sigpipe.h"
#include "worker/comm/gloo/waiter_pool.h"
#include "worker/store/prefix_store.h"

namespace dstrain::comm {
namespace {

using gloo::transport::UnboundBuffer;
using gloo_internal::BlockSigpipeInThisThread;
using gloo_internal::FailureRecords;
using gloo_internal::Runner;
using gloo_internal::ScopedBlockSigpipe;
using gloo_internal::WaiterPool;
using gloo_internal::Workspace;

// Slots name a transfer within a pair (Gloo matches sends and receives by slot, in posting order).
// Collective #seq uses one slot for all its steps; Send/Recv use one per tag.
constexpr uint64_t kCollectiveSlots = uint64_t{1} << 56;
constexpr uint64_t kP2PSlots = uint64_t{2} << 56;
// A receive that never completes, posted once per peer: Gloo signals it when the connection breaks.
constexpr uint64_t kWatchSlot = uint64_t{3} << 56;
// After an interruption (a peer's failure record, a broken connection), how long a wait may still
// take to complete: the data may have arrived just before.
constexpr absl::Duration kRecheck = absl::Milliseconds(200);

uint64_t CollectiveSlot(int64_t seq) {
  return kCollectiveSlots | (static_cast<uint64_t>(seq) & (kCollectiveSlots - 1));
}
uint64_t P2PSlot(int tag) { return kP2PSlots | static_cast<uint32_t>(tag); }

// Gloo's waits take milliseconds; a zero wait would time out at once, an "infinite" one overflow.
std::chrono::milliseconds ToMillis(absl::Duration d) {
  const absl::Duration clamped = std::clamp(d, absl::Milliseconds(1), absl::Hours(24 * 365));
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(clamped));
}

// Gloo's CreateDevice dereferences a null pointer when the host name does not resolve to an
// address it can bind (Gloo 2022-05), so check that first.
absl::Status CheckBindable(const std::string& hostname) {
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* result = nullptr;
  const int rv = getaddrinfo(hostname.c_str(), nullptr, &hints, &result);
  if (rv != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve '", hostname, "': ", gai_strerror(rv)));
  }
  bool bound = false;
  for (struct addrinfo* a = result; a != nullptr && !bound; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd == -1) continue;
    bound = bind(fd, a->ai_addr, a->ai_addrlen) == 0;
    close(fd);
  }
  freeaddrinfo(result);
  if (!bound) {
    return absl::UnavailableError(
        absl::StrCat("no address of '", hostname, "' can be bound on this machine"));
  }
  return absl::OkStatus();
}

}  // namespace

// ------------------------------------------------------------------------------------------------

class GlooCommunicator::Impl {
 public:
  // Rendezvous under `prefix` in `base`, then connects the full mesh. `device` may be null (a new
  // one is created).
  static absl::StatusOr<std::unique_ptr<Impl>> Connect(
      store::Store* base, std::string prefix, int rank, int size, std::string name,
      const GlooOptions& options, std::shared_ptr<gloo::transport::Device> device);

  ~Impl();

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }

  // A collective: queued behind the others, run by the worker thread as body(runner).
  using Body = std::function<absl::Status(Runner& run)>;
  absl::StatusOr<std::unique_ptr<Work>> Enqueue(absl::string_view op, absl::Duration timeout,
                                                Body body);
  absl::StatusOr<std::unique_ptr<Work>> PostP2P(bool send, CommBuffer buffer, int peer, int tag,
                                                absl::Duration timeout);
  void Abort(const absl::Status& reason);
  absl::Status AsyncError();
  absl::StatusOr<std::unique_ptr<Communicator>> Split(const std::vector<int>& ranks,
                                                      absl::string_view name,
                                                      const CommOptions& options);

 private:
  class CollectiveRunner;

  struct Op {
    std::string name;
    int64_t seq = 0;
    absl::Duration timeout;
    Body body;
    std::shared_ptr<WorkState> work;
  };

  Impl(store::Store* base, std::string prefix, int rank, int size, std::string name,
       const GlooOptions& options, std::shared_ptr<gloo::transport::Device> device,
       std::shared_ptr<gloo::rendezvous::Context> context);

  std::string Describe(absl::string_view op, int64_t seq = -1) const;
  void WorkerLoop();
  void RunOp(Op& op);
  // Polls the store for failure records of the running collective (NOTE [Failure records]).
  void WatchdogLoop();
  // Poisons the communicator with `error` unless already poisoned, interrupts every wait in
  // flight and hard-closes the connections (peers then fail at once). Returns the first error.
  absl::Status PoisonAndClose(const absl::Status& error);
  // REQUIRES: the buffer stays alive until Unregister. Fails once poisoned, or once collective
  // `seq` (-1 for Send/Recv) was interrupted.
  absl::Status Register(UnboundBuffer* buffer, int64_t seq, int peer);
  void Unregister(UnboundBuffer* buffer);
  // Whether a peer's failure record interrupted collective `seq`.
  bool Interrupted(int64_t seq);
  // Why the connection to `peer` broke ("" while it is fine).
  std::string BrokenConnection(int peer);

  // NOTE [Peer watch]: Gloo wakes a wait on a broken connection only when the transfer had not
  // started; a receive whose data was arriving, or a send being written, sleeps until its timeout.
  // So each peer gets a receive that never completes, and a thread waiting on it: when the
  // connection breaks, Gloo signals that receive, and the thread interrupts this rank's transfers
  // with that peer (which then fail at once unless their data had arrived).
  struct PeerWatch {
    std::unique_ptr<UnboundBuffer> buffer;
    char byte = 0;
    std::thread thread;
  };
  void StartPeerWatches();
  void WatchPeer(PeerWatch& watch, int peer);
  void StopPeerWatches();

  const int rank_;
  const int size_;
  const std::string name_;
  const GlooOptions options_;
  store::Store* const base_;
  store::PrefixStore scope_;  // this group's keys
  FailureRecords records_;    // under scope_
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::rendezvous::Context> context_;

  absl::Mutex mu_;
  std::deque<Op> queue_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;      // the worker is inside an op
  int64_t current_seq_ ABSL_GUARDED_BY(mu_) = -1;  // the collective running, -1 if none
  absl::Time current_start_ ABSL_GUARDED_BY(mu_);
  int64_t interrupted_seq_ ABSL_GUARDED_BY(mu_) = -1;  // a peer reported failing this one
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);  // not OK once poisoned
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_split_ ABSL_GUARDED_BY(mu_) = 0;
  // Buffers with a transfer posted: the collective they belong to (-1: Send/Recv) and the peer.
  struct Inflight {
    int64_t seq;
    int peer;
  };
  absl::flat_hash_map<UnboundBuffer*, Inflight> inflight_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> broken_ ABSL_GUARDED_BY(mu_);  // per peer, see BrokenConnection
  std::vector<std::unique_ptr<PeerWatch>> watches_;       // per peer (null for this rank)

  Workspace workspace_;  // the worker thread's, lent to each collective's algorithm

  WaiterPool waiters_;
  std::thread worker_;
  std::thread watchdog_;
};

// The transfers of one collective: posts sends and receives on the collective's slot, waits for
// them in posting order against the collective's deadline, and names the peer when one fails.
class GlooCommunicator::Impl::CollectiveRunner final : public Runner {
 public:
  CollectiveRunner(Impl* impl, int64_t seq, absl::Time deadline, absl::Duration timeout)
      : impl_(impl),
        seq_(seq),
        slot_(CollectiveSlot(seq)),
        deadline_(deadline),
        timeout_(timeout) {}
  ~CollectiveRunner() override {
    for (Transfer& t : transfers_) impl_->Unregister(t.buffer.get());
  }

  int rank() const override { return impl_->rank_; }
  int size() const override { return impl_->size_; }
  Workspace& workspace() override { return impl_->workspace_; }

  absl::Status Send(int peer, const void* data, size_t bytes) override {
    return Post(true, peer, const_cast<void*>(data), bytes);
  }
  absl::Status Recv(int peer, void* data, size_t bytes) override {
    return Post(false, peer, data, bytes);
  }

  // Waits for every transfer posted so far.
  absl::Status WaitAll() override {
    for (; waited_ < transfers_.size(); ++waited_) {
      Transfer& t = transfers_[waited_];
      bool completed = false;
      try {
        completed = Wait(t, deadline_);
        if (!completed) {
          // Interrupted. By Abort (or a failure elsewhere): give up. By a peer's failure record
          // or a broken connection: the transfer may have completed just before, so look again
          // briefly; a wait that times out now fails the operation.
          if (absl::Status poisoned = impl_->AsyncError(); !poisoned.ok()) {
            return absl::AbortedError(absl::StrCat("interrupted while waiting for rank ", t.peer,
                                                   ": ", poisoned.message()));
          }
          const absl::Time recheck = std::min(deadline_, absl::Now() + kRecheck);
          while (!completed && absl::Now() < recheck) completed = Wait(t, recheck);
          if (!completed) return Failure(t, "interrupted");
        }
      } catch (const std::exception& e) {
        return Failure(t, e.what());
      }
    }
    return absl::OkStatus();
  }

 private:
  struct Transfer {
    std::unique_ptr<UnboundBuffer> buffer;
    int peer;
    bool send;
  };

  static bool Wait(Transfer& t, absl::Time deadline) {
    const auto wait = ToMillis(deadline - absl::Now());
    return t.send ? t.buffer->waitSend(wait) : t.buffer->waitRecv(wait);
  }

  absl::Status Post(bool send, int peer, void* data, size_t bytes) {
    if (bytes == 0) return absl::OkStatus();  // both sides skip empty transfers
    Transfer t{nullptr, peer, send};
    try {
      t.buffer = impl_->context_->createUnboundBuffer(data, bytes);
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("creating a Gloo buffer: ", e.what()));
    }
    if (absl::Status s = impl_->Register(t.buffer.get(), seq_, peer); !s.ok()) {
      if (impl_->Interrupted(seq_)) return absl::AbortedError(impl_->records_.PeerFailure(seq_));
      return s;
    }
    UnboundBuffer* raw = t.buffer.get();
    transfers_.push_back(std::move(t));
    try {
      if (send) {
        raw->send(peer, slot_);
      } else {
        raw->recv(peer, slot_);
      }
    } catch (const std::exception& e) {
      return Failure(transfers_.back(), e.what());
    }
    return absl::OkStatus();
  }

  // The most telling reason for the failure of transfer `t`: the broken connection to its peer,
  // a peer's failure record, a timeout, or what Gloo said.
  absl::Status Failure(const Transfer& t, absl::string_view what) {
    const std::string broken = impl_->BrokenConnection(t.peer);
    if (broken.empty() && impl_->Interrupted(seq_)) {
      return absl::AbortedError(impl_->records_.PeerFailure(seq_));
    }
    if (broken.empty() && (absl::StrContains(what, "Timed out") || absl::Now() >= deadline_)) {
      return absl::DeadlineExceededError(
          absl::StrCat("timed out after ", absl::FormatDuration(timeout_), " waiting for ",
                       t.send ? absl::StrCat("rank ", t.peer, " to accept data")
                              : absl::StrCat("data from rank ", t.peer)));
    }
    // The connection broke: if the peer failed this operation first and said why, say that.
    if (std::optional<std::string> why = impl_->records_.Record(seq_, t.peer)) {
      return absl::AbortedError(absl::StrCat("rank ", t.peer, " failed first: ", *why));
    }
    return absl::AbortedError(absl::StrCat("lost the connection to rank ", t.peer, " (",
                                           broken.empty() ? what : broken, ")"));
  }

  Impl* const impl_;
  const int64_t seq_;
  const uint64_t slot_;
  const absl::Time deadline_;
  const absl::Duration timeout_;
  std::vector<Transfer> transfers_;
  size_t waited_ = 0;
};

// ------------------------------------------------------------------------------------------------

GlooCommunicator::Impl::Impl(store::Store* base, std::string prefix, int rank, int size,
                             std::string name, const GlooOptions& options,
                             std::shared_ptr<gloo::transport::Device> device,
                             std::shared_ptr<gloo::rendezvous::Context> context)
    : rank_(rank),
      size_(size),
      name_(std::move(name)),
      options_(options),
      base_(base),
      scope_(std::move(prefix), base),
      records_(&scope_, rank, size, options.failure_report_grace),
      device_(std::move(device)),
      context_(std::move(context)) {
  broken_.resize(size_);
  StartPeerWatches();
  worker_ = std::thread([this] { WorkerLoop(); });
  if (size_ > 1 && options_.failure_poll_interval > absl::ZeroDuration()) {
    watchdog_ = std::thread([this] { WatchdogLoop(); });
  }
}

GlooCommunicator::Impl::~Impl() {
  bool busy;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    busy = running_ || !queue_.empty() || !inflight_.empty();
  }
  // With nothing in flight the connections close softly (data already written still arrives);
  // otherwise pending operations are aborted and the connections reset.
  if (busy) Abort(absl::AbortedError("communicator destroyed"));
  worker_.join();
  if (watchdog_.joinable()) watchdog_.join();
  waiters_.Stop();
  StopPeerWatches();
  for (auto& w : watches_) {
    if (w != nullptr && w->thread.joinable()) w->thread.join();
  }
  watches_.clear();
  context_.reset();
  device_.reset();
}

absl::StatusOr<std::unique_ptr<GlooCommunicator::Impl>> GlooCommunicator::Impl::Connect(
    store::Store* base, std::string prefix, int rank, int size, std::string name,
    const GlooOptions& options, std::shared_ptr<gloo::transport::Device> device) {
  const std::string who =
      absl::StrCat("GlooCommunicator: joining group '", name, "' as rank ", rank, " of ", size);
  if (device == nullptr) {
    if (absl::Status s = CheckBindable(options.hostname); !s.ok()) {
      return absl::UnavailableError(absl::StrCat(who, ": ", s.message()));
    }
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    try {
      ScopedBlockSigpipe block;  // Gloo's device thread inherits this mask
      device = gloo::transport::tcp::CreateDevice(attr);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat(who, ": cannot create a TCP device on '",
                                                 options.hostname, "': ", e.what()));
    }
  }
  store::PrefixStore scope(prefix, base);
  GlooStoreAdapter adapter(&scope, options.timeout);
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
  try {
    context->setTimeout(ToMillis(options.timeout));
    context->connectFullMesh(adapter, device);
  } catch (const std::exception& e) {
    const absl::Status cause = adapter.error();
    const absl::StatusCode code = !cause.ok() ? cause.code()
                                  : absl::StrContains(e.what(), "imeout")
                                      ? absl::StatusCode::kDeadlineExceeded
                                      : absl::StatusCode::kUnavailable;
    // Name the ranks that never published their address (Gloo's keys are the rank numbers).
    std::vector<int> absent;
    for (int r = 0; r < size; ++r) {
      if (!scope.Get(std::to_string(r), absl::ZeroDuration()).ok()) absent.push_back(r);
    }
    std::string message = absl::StrCat(who, " failed: ", cause.ok() ? e.what() : cause.message());
    if (!absent.empty()) {
      absl::StrAppend(&message, "; rank(s) [", absl::StrJoin(absent, ", "),
                      "] never joined within ", absl::FormatDuration(options.timeout));
    }
    return absl::Status(code, message);
  }
  return std::unique_ptr<Impl>(new Impl(base, std::move(prefix), rank, size, std::move(name),
                                        options, std::move(device), std::move(context)));
}

void GlooCommunicator::Impl::StartPeerWatches() {
  watches_.resize(size_);
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    auto w = std::make_unique<PeerWatch>();
    try {
      w->buffer = context_->createUnboundBuffer(&w->byte, 1);
      w->buffer->recv(peer, kWatchSlot);
    } catch (const std::exception& e) {
      absl::MutexLock lock(&mu_);
      broken_[peer] = e.what();
      continue;
    }
    PeerWatch* watch = w.get();
    watches_[peer] = std::move(w);
    watch->thread = std::thread([this, watch, peer] { WatchPeer(*watch, peer); });
  }
}

void GlooCommunicator::Impl::WatchPeer(PeerWatch& watch, int peer) {
  BlockSigpipeInThisThread();
  try {
    // Returns only when interrupted (StopPeerWatches); nobody sends on this slot.
    watch.buffer->waitRecv(ToMillis(absl::InfiniteDuration()));
    return;
  } catch (const std::exception& e) {
    // Our own timeouts close every connection with this message: not the peer's doing.
    if (absl::StrContains(e.what(), "Application timeout")) return;
    absl::MutexLock lock(&mu_);
    if (!broken_[peer].empty()) return;
    broken_[peer] = e.what();
    for (const auto& [b, info] : inflight_) {
      if (info.peer != peer) continue;
      b->abortWaitRecv();
      b->abortWaitSend();
    }
  }
}

void GlooCommunicator::Impl::StopPeerWatches() {
  for (auto& w : watches_) {
    if (w != nullptr && w->buffer != nullptr) w->buffer->abortWaitRecv();
  }
}

bool GlooCommunicator::Impl::Interrupted(int64_t seq) {
  absl::MutexLock lock(&mu_);
  return seq >= 0 && seq == interrupted_seq_;
}

std::string GlooCommunicator::Impl::BrokenConnection(int peer) {
  absl::MutexLock lock(&mu_);
  return broken_[peer];
}

std::string GlooCommunicator::Impl::Describe(absl::string_view op, int64_t seq) const {
  std::string s = absl::StrCat(op, " on group '", name_, "' (rank ", rank_, " of ", size_);
  if (seq >= 0) absl::StrAppend(&s, ", op #", seq);
  return absl::StrCat(s, ")");
}

absl::Status GlooCommunicator::Impl::Register(UnboundBuffer* buffer, int64_t seq, int peer) {
  absl::MutexLock lock(&mu_);
  if (!error_.ok()) return absl::AbortedError(std::string(error_.message()));
  if (seq >= 0 && seq == interrupted_seq_) {
    return absl::AbortedError("interrupted: a peer reported failing this operation");
  }
  inflight_[buffer] = Inflight{seq, peer};
  return absl::OkStatus();
}

void GlooCommunicator::Impl::Unregister(UnboundBuffer* buffer) {
  absl::MutexLock lock(&mu_);
  inflight_.erase(buffer);
}

absl::Status GlooCommunicator::Impl::PoisonAndClose(const absl::Status& error) {
  absl::Status first;
  {
    absl::MutexLock lock(&mu_);
    if (error_.ok()) error_ = error;
    first = error_;
    // Interrupt every wait in flight; a buffer not yet waited on returns at once when it is.
    for (const auto& [b, info] : inflight_) {
      b->abortWaitRecv();
      b->abortWaitSend();
    }
  }
  StopPeerWatches();  // closing the connections below does not signal their receives
  try {
    context_->closeConnections();
  } catch (const std::exception&) {
    // Already closed or never connected: nothing to close.
  }
  return first;
}

void GlooCommunicator::Impl::Abort(const absl::Status& reason) {
  PoisonAndClose(absl::AbortedError(absl::StrCat(Describe("Abort"), ": aborted: ",
                                                 reason.message().empty()
                                                     ? absl::StatusCodeToString(reason.code())
                                                     : std::string(reason.message()))))
      .IgnoreError();
}

absl::Status GlooCommunicator::Impl::AsyncError() {
  absl::MutexLock lock(&mu_);
  return error_;
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::Impl::Enqueue(absl::string_view op,
                                                                      absl::Duration timeout,
                                                                      Body body) {
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

void GlooCommunicator::Impl::WorkerLoop() {
  BlockSigpipeInThisThread();
  for (;;) {
    Op op;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Impl* impl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl->mu_) {
            return !impl->queue_.empty() || impl->stop_;
          },
          this));
      if (queue_.empty()) return;  // stopping, and nothing left
      op = std::move(queue_.front());
      queue_.pop_front();
      running_ = true;
    }
    RunOp(op);
    absl::MutexLock lock(&mu_);
    running_ = false;
  }
}

// A failed collective is recorded in the store for the peers (NOTE [Failure records] in
// failure_records.h) and poisons the communicator.
void GlooCommunicator::Impl::RunOp(Op& op) {
  {
    absl::MutexLock lock(&mu_);
    if (!error_.ok()) {
      op.work->Complete(absl::AbortedError(absl::StrCat(
          Describe(op.name, op.seq), ": communicator is poisoned: ", error_.message())));
      return;
    }
    current_seq_ = op.seq;
    current_start_ = absl::Now();
  }
  absl::Status status;
  absl::Status first_error;  // the poisoning error when `status` is a consequence of it
  absl::Status poison;       // what this failure poisoned the communicator with
  std::string publish_error;
  {
    CollectiveRunner runner(this, op.seq, absl::Now() + op.timeout, op.timeout);
    try {
      status = op.body(runner);
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("unexpected Gloo error: ", e.what()));
    }
    {
      absl::MutexLock lock(&mu_);
      current_seq_ = -1;
      first_error = error_;
    }
    if (!status.ok() && first_error.ok()) {
      // Record the failure before closing the connections, so that a peer seeing them close can
      // read why; poison before the runner's buffers go away, so nothing can land in them later.
      publish_error = records_.Publish(op.seq, status.message());
      poison = absl::Status(status.code(),
                            absl::StrCat(Describe(op.name, op.seq), ": ", status.message()));
      PoisonAndClose(poison).IgnoreError();
    }
  }
  if (status.ok()) {
    op.work->Complete(absl::OkStatus());
    return;
  }
  if (!first_error.ok()) {
    // Aborted locally, or poisoned by a failed Send/Recv: that error says it all.
    op.work->Complete(absl::AbortedError(absl::StrCat(
        Describe(op.name, op.seq), ": communicator is poisoned: ", first_error.message())));
    return;
  }
  const std::string diagnosis =
      publish_error.empty() ? records_.AwaitRecords(op.seq, op.timeout) : publish_error;
  const absl::Status final_status(
      status.code(), absl::StrCat(Describe(op.name, op.seq), ": ", status.message(), diagnosis));
  {
    absl::MutexLock lock(&mu_);
    if (error_ == poison) error_ = final_status;  // the fuller message, unless another came first
  }
  op.work->Complete(final_status);
}

void GlooCommunicator::Impl::WatchdogLoop() {
  BlockSigpipeInThisThread();
  const absl::Duration interval = options_.failure_poll_interval;
  absl::MutexLock lock(&mu_);
  for (;;) {
    mu_.AwaitWithTimeout(absl::Condition(&stop_), interval);
    if (stop_) return;
    if (current_seq_ < 0 || interrupted_seq_ == current_seq_ ||
        absl::Now() - current_start_ < interval) {
      continue;
    }
    const int64_t seq = current_seq_;
    mu_.Unlock();
    absl::StatusOr<int64_t> failed = records_.Count(seq);
    mu_.Lock();
    if (failed.ok() && *failed > 0 && current_seq_ == seq) {
      interrupted_seq_ = seq;
      for (const auto& [b, info] : inflight_) {
        if (info.seq != seq) continue;
        b->abortWaitRecv();
        b->abortWaitSend();
      }
    }
  }
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::Impl::PostP2P(bool send, CommBuffer buffer,
                                                                      int peer, int tag,
                                                                      absl::Duration timeout) {
  const absl::string_view op = send ? "Send" : "Recv";
  const size_t bytes = static_cast<size_t>(buffer.count) * DTypeSize(buffer.dtype);
  const std::string what =
      absl::StrCat(Describe(op), " ", send ? "to" : "from", " rank ", peer, ", tag ", tag);
  {
    absl::MutexLock lock(&mu_);
    if (!error_.ok()) {
      return absl::AbortedError(
          absl::StrCat(what, ": communicator is poisoned: ", error_.message()));
    }
  }
  if (bytes == 0) return CompletedWork(absl::OkStatus());  // both sides skip empty transfers

  std::shared_ptr<UnboundBuffer> ub;
  try {
    ub = context_->createUnboundBuffer(buffer.data, bytes);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": creating a Gloo buffer: ", e.what()));
  }
  DT_RETURN_IF_ERROR(Register(ub.get(), -1, peer));
  const absl::Time deadline = absl::Now() + timeout;
  auto fail = [this, what, peer, timeout, deadline](absl::string_view gloo_error) {
    absl::Status s;
    const std::string broken = BrokenConnection(peer);
    if (broken.empty() && (absl::StrContains(gloo_error, "Timed out") || absl::Now() >= deadline)) {
      s = absl::DeadlineExceededError(absl::StrCat(
          what, ": timed out after ", absl::FormatDuration(timeout), " waiting for rank ", peer));
    } else {
      s = absl::AbortedError(absl::StrCat(what, ": lost the connection to rank ", peer, " (",
                                          broken.empty() ? gloo_error : broken, ")"));
    }
    absl::Status first = PoisonAndClose(s);
    return first.message() == s.message()
               ? s
               : absl::AbortedError(
                     absl::StrCat(what, ": communicator is poisoned: ", first.message()));
  };
  try {
    ScopedBlockSigpipe block;  // the send may write to the socket from this thread
    if (send) {
      ub->send(peer, P2PSlot(tag));
    } else {
      ub->recv(peer, P2PSlot(tag));
    }
  } catch (const std::exception& e) {
    Unregister(ub.get());
    return fail(e.what());
  }
  auto work = std::make_shared<WorkState>();
  waiters_.Submit([this, ub, send, deadline, work, what, fail]() mutable {
    absl::Status status;
    auto wait = [&](absl::Time until) {
      const auto ms = ToMillis(until - absl::Now());
      return send ? ub->waitSend(ms) : ub->waitRecv(ms);
    };
    try {
      bool completed = wait(deadline);
      if (!completed) {
        if (absl::Status poisoned = AsyncError(); !poisoned.ok()) {
          status = absl::AbortedError(absl::StrCat(what, ": interrupted: ", poisoned.message()));
        } else {
          // The connection to the peer broke; the data may have arrived just before.
          const absl::Time recheck = std::min(deadline, absl::Now() + kRecheck);
          while (!completed && absl::Now() < recheck) completed = wait(recheck);
          if (!completed) status = fail("interrupted");
        }
      }
    } catch (const std::exception& e) {
      status = fail(e.what());
    }
    Unregister(ub.get());
    ub.reset();  // Gloo holds no reference into the caller's buffer once this returns
    work->Complete(status);
  });
  return std::unique_ptr<Work>(new CompletionWork(std::move(work)));
}

absl::StatusOr<std::unique_ptr<Communicator>> GlooCommunicator::Impl::Split(
    const std::vector<int>& ranks, absl::string_view name, const CommOptions& options) {
  int64_t k;
  {
    absl::MutexLock lock(&mu_);
    if (!error_.ok()) {
      return absl::AbortedError(absl::StrCat(Describe(absl::StrCat("Split('", name, "')")),
                                             ": communicator is poisoned: ", error_.message()));
    }
    k = next_split_++;
  }
  auto it = std::find(ranks.begin(), ranks.end(), rank_);
  if (it == ranks.end()) return std::unique_ptr<Communicator>();
  GlooOptions child_options = options_;
  child_options.timeout = options.timeout;
  DT_ASSIGN_OR_RETURN(std::unique_ptr<Impl> child,
                      Connect(base_, absl::StrCat(scope_.prefix(), "/split/", k, "/", name),
                              static_cast<int>(it - ranks.begin()), static_cast<int>(ranks.size()),
                              std::string(name), child_options, device_));
  return std::unique_ptr<Communicator>(new GlooCommunicator(std::move(child)));
}

// ---- GlooCommunicator ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    store::Store* store, int rank, int size, absl::string_view name, const GlooOptions& options) {
  if (store == nullptr) return absl::InvalidArgumentError("GlooCommunicator: null store");
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("GlooCommunicator: rank ", rank, " of ", size, " is not a valid rank"));
  }
  if (name.empty()) return absl::InvalidArgumentError("GlooCommunicator: empty group name");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("GlooCommunicator: timeout must be positive");
  }
  DT_ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl,
                      Impl::Connect(store, absl::StrCat("gloo/", name), rank, size,
                                    std::string(name), options, nullptr));
  return std::unique_ptr<GlooCommunicator>(new GlooCommunicator(std::move(impl)));
}

GlooCommunicator::GlooCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GlooCommunicator::~GlooCommunicator() = default;

int GlooCommunicator::rank() const { return impl_->rank(); }
int GlooCommunicator::size() const { return impl_->size(); }
const std::string& GlooCommunicator::name() const { return impl_->name(); }

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::AllReduce(CommBuffer buffer, ReduceOp op,
                                                                  const CommOptions& options) {
  constexpr absl::string_view kOp = "AllReduce";
  DT_RETURN_IF_ERROR(CheckAllReduceArgs(*this, buffer, options, DeviceType::kCpu));
  return impl_->Enqueue(kOp, options.timeout, [buffer, op](Runner& run) {
    return gloo_internal::RunAllReduce(run, buffer, op);
  });
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::ReduceScatter(CommBuffer input,
                                                                      CommBuffer output,
                                                                      ReduceOp op,
                                                                      const CommOptions& options) {
  constexpr absl::string_view kOp = "ReduceScatter";
  DT_RETURN_IF_ERROR(CheckReduceScatterArgs(*this, input, output, options, DeviceType::kCpu));
  return impl_->Enqueue(kOp, options.timeout, [input, output, op](Runner& run) {
    return gloo_internal::RunReduceScatter(run, input, output, op);
  });
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::AllGather(CommBuffer input,
                                                                  CommBuffer output,
                                                                  const CommOptions& options) {
  constexpr absl::string_view kOp = "AllGather";
  DT_RETURN_IF_ERROR(CheckAllGatherArgs(*this, input, output, options, DeviceType::kCpu));
  return impl_->Enqueue(kOp, options.timeout, [input, output](Runner& run) {
    return gloo_internal::RunAllGather(run, input, output);
  });
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::Broadcast(CommBuffer buffer, int root,
                                                                  const CommOptions& options) {
  constexpr absl::string_view kOp = "Broadcast";
  DT_RETURN_IF_ERROR(CheckBroadcastArgs(*this, buffer, root, options, DeviceType::kCpu));
  return impl_->Enqueue(kOp, options.timeout, [buffer, root](Runner& run) {
    return gloo_internal::RunBroadcast(run, buffer, root);
  });
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::Send(CommBuffer buffer, int dst, int tag,
                                                             const CommOptions& options) {
  constexpr absl::string_view kOp = "Send";
  DT_RETURN_IF_ERROR(
      CheckPointToPointArgs(*this, kOp, buffer, dst, "dst", options, DeviceType::kCpu));
  return impl_->PostP2P(/*send=*/true, buffer, dst, tag, options.timeout);
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::Recv(CommBuffer buffer, int src, int tag,
                                                             const CommOptions& options) {
  constexpr absl::string_view kOp = "Recv";
  DT_RETURN_IF_ERROR(
      CheckPointToPointArgs(*this, kOp, buffer, src, "src", options, DeviceType::kCpu));
  return impl_->PostP2P(/*send=*/false, buffer, src, tag, options.timeout);
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::Barrier(const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckOptions(*this, "Barrier", options));
  return impl_->Enqueue("Barrier", options.timeout, gloo_internal::RunBarrier);
}

void GlooCommunicator::Abort(absl::Status reason) { impl_->Abort(reason); }

absl::Status GlooCommunicator::AsyncError() { return impl_->AsyncError(); }

absl::StatusOr<std::unique_ptr<Communicator>> GlooCommunicator::Split(const std::vector<int>& ranks,
                                                                      absl::string_view name,
                                                                      const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckSplitRanks(*this, ranks, name));
  DT_RETURN_IF_ERROR(CheckOptions(*this, "Split", options));
  return impl_->Split(ranks, name, options);
}

}  // namespace dstrain::comm
