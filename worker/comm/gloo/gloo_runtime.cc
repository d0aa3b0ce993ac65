#include "worker/comm/gloo/gloo_runtime.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

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
#include "worker/comm/gloo/collective_runner.h"
#include "worker/comm/gloo/gloo_store_adapter.h"
#include "worker/comm/gloo/sigpipe.h"
#include "worker/store/prefix_store.h"

namespace dstrain::comm::gloo_internal {

using gloo::transport::UnboundBuffer;

namespace {

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

std::chrono::milliseconds ToMillis(absl::Duration d) {
  const absl::Duration clamped = std::clamp(d, absl::Milliseconds(1), absl::Hours(24 * 365));
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(clamped));
}

Runtime::Runtime(store::Store* base, std::string prefix, int rank, int size, std::string name,
                 const GlooOptions& options, std::shared_ptr<gloo::transport::Device> device,
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

Runtime::~Runtime() {
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

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Connect(
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
  return std::unique_ptr<Runtime>(new Runtime(base, std::move(prefix), rank, size, std::move(name),
                                              options, std::move(device), std::move(context)));
}

void Runtime::StartPeerWatches() {
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

void Runtime::WatchPeer(PeerWatch& watch, int peer) {
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

void Runtime::StopPeerWatches() {
  for (auto& w : watches_) {
    if (w != nullptr && w->buffer != nullptr) w->buffer->abortWaitRecv();
  }
}

bool Runtime::Interrupted(int64_t seq) {
  absl::MutexLock lock(&mu_);
  return seq >= 0 && seq == interrupted_seq_;
}

std::string Runtime::BrokenConnection(int peer) {
  absl::MutexLock lock(&mu_);
  return broken_[peer];
}

std::string Runtime::Describe(absl::string_view op, int64_t seq) const {
  std::string s = absl::StrCat(op, " on group '", name_, "' (rank ", rank_, " of ", size_);
  if (seq >= 0) absl::StrAppend(&s, ", op #", seq);
  return absl::StrCat(s, ")");
}

absl::Status Runtime::Register(UnboundBuffer* buffer, int64_t seq, int peer) {
  absl::MutexLock lock(&mu_);
  if (!error_.ok()) return absl::AbortedError(std::string(error_.message()));
  if (seq >= 0 && seq == interrupted_seq_) {
    return absl::AbortedError("interrupted: a peer reported failing this operation");
  }
  inflight_[buffer] = Inflight{seq, peer};
  return absl::OkStatus();
}

void Runtime::Unregister(UnboundBuffer* buffer) {
  absl::MutexLock lock(&mu_);
  inflight_.erase(buffer);
}

absl::Status Runtime::PoisonAndClose(const absl::Status& error) {
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

void Runtime::Abort(const absl::Status& reason) {
  PoisonAndClose(absl::AbortedError(absl::StrCat(Describe("Abort"), ": aborted: ",
                                                 reason.message().empty()
                                                     ? absl::StatusCodeToString(reason.code())
                                                     : std::string(reason.message()))))
      .IgnoreError();
}

absl::Status Runtime::AsyncError() {
  absl::MutexLock lock(&mu_);
  return error_;
}

absl::StatusOr<std::unique_ptr<Work>> Runtime::Enqueue(absl::string_view op, absl::Duration timeout,
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

void Runtime::WorkerLoop() {
  BlockSigpipeInThisThread();
  for (;;) {
    Op op;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Runtime* rt)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(rt->mu_) { return !rt->queue_.empty() || rt->stop_; },
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
void Runtime::RunOp(Op& op) {
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

void Runtime::WatchdogLoop() {
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

absl::StatusOr<std::unique_ptr<Work>> Runtime::PostP2P(bool send, CommBuffer buffer, int peer,
                                                       int tag, absl::Duration timeout) {
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

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Split(const std::vector<int>& ranks,
                                                        absl::string_view name,
                                                        const CommOptions& options) {
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
  if (it == ranks.end()) return std::unique_ptr<Runtime>();
  GlooOptions child_options = options_;
  child_options.timeout = options.timeout;
  return Connect(base_, absl::StrCat(scope_.prefix(), "/split/", k, "/", name),
                 static_cast<int>(it - ranks.begin()), static_cast<int>(ranks.size()),
                 std::string(name), child_options, device_);
}

}  // namespace dstrain::comm::gloo_internal
