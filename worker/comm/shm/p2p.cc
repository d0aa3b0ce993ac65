#include "worker/comm/shm/p2p.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "worker/comm/shm/wait.h"

namespace dstrain::comm::shm_internal {

namespace {

constexpr int64_t kHeaderBytes = 16;  // tag, byte count
constexpr absl::Duration kMaxPause = absl::Microseconds(200);
constexpr absl::Duration kLivenessInterval = absl::Milliseconds(50);

// Copies `n` bytes into the ring at stream position `pos` (wrapping around).
void RingWrite(char* ring, int64_t ring_bytes, uint64_t pos, const char* src, int64_t n) {
  const int64_t at = static_cast<int64_t>(pos % ring_bytes);
  const int64_t first = std::min(n, ring_bytes - at);
  std::memcpy(ring + at, src, first);
  if (n > first) std::memcpy(ring, src + first, n - first);
}

void RingRead(const char* ring, int64_t ring_bytes, uint64_t pos, char* dst, int64_t n) {
  const int64_t at = static_cast<int64_t>(pos % ring_bytes);
  const int64_t first = std::min(n, ring_bytes - at);
  std::memcpy(dst, ring + at, first);
  if (n > first) std::memcpy(dst + first, ring, n - first);
}

}  // namespace

PointToPoint::PointToPoint(Segment* segment, int rank, Poison poison)
    : segment_(segment), rank_(rank), poison_(std::move(poison)) {
  peers_.resize(segment_->size());
  progress_ = std::thread([this] { ProgressLoop(); });
}

PointToPoint::~PointToPoint() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    FailAllLocked(absl::AbortedError("communicator destroyed"));
  }
  progress_.join();
}

void PointToPoint::FailAll(const absl::Status& error) {
  absl::MutexLock lock(&mu_);
  FailAllLocked(error);
}

void PointToPoint::FailAllLocked(const absl::Status& error) {
  if (error_.ok()) error_ = error;
  auto fail = [&](const std::shared_ptr<Transfer>& t) {
    if (t != nullptr) {
      t->work->Complete(absl::AbortedError(
          absl::StrCat(t->what, ": communicator is poisoned: ", error_.message())));
    }
  };
  for (Peer& p : peers_) {
    for (auto& t : p.sends) fail(t);
    for (auto& t : p.recvs) fail(t);
    for (auto& u : p.unexpected) fail(u.claimed);
    fail(p.incoming.recv);
    p.sends.clear();
    p.recvs.clear();
    p.unexpected.clear();
    p.incoming = Incoming();
  }
}

absl::StatusOr<std::unique_ptr<Work>> PointToPoint::Post(bool send, const CommBuffer& buffer,
                                                         int peer, int tag, absl::Duration timeout,
                                                         std::string what) {
  auto t = std::make_shared<Transfer>();
  t->send = send;
  t->data = static_cast<char*>(buffer.data);
  t->bytes = buffer.count * static_cast<int64_t>(DTypeSize(buffer.dtype));
  t->tag = tag;
  t->peer = peer;
  t->deadline = absl::Now() + timeout;
  t->timeout = timeout;
  t->what = std::move(what);
  t->work = std::make_shared<WorkState>();
  absl::MutexLock lock(&mu_);
  if (!error_.ok()) {
    return absl::AbortedError(
        absl::StrCat(t->what, ": communicator is poisoned: ", error_.message()));
  }
  if (t->bytes == 0) return CompletedWork(absl::OkStatus());  // both sides skip empty transfers
  Peer& p = peers_[peer];
  if (send) {
    p.sends.push_back(t);
  } else {
    // The first message of this tag that arrived without a Recv is this Recv's.
    bool matched = false;
    for (Unexpected& u : p.unexpected) {
      if (u.tag != tag || u.claimed != nullptr) continue;
      u.claimed = t;
      matched = true;
      if (u.received == u.bytes) {
        Deliver(u, t);
        p.unexpected.remove_if(
            [](const Unexpected& x) { return x.claimed == nullptr && x.bytes < 0; });
      }
      break;
    }
    if (!matched) p.recvs.push_back(t);
  }
  return std::unique_ptr<Work>(new CompletionWork(t->work));
}

void PointToPoint::Deliver(Unexpected& u, const std::shared_ptr<Transfer>& recv) {
  if (u.bytes != recv->bytes) {
    recv->work->Complete(absl::InvalidArgumentError(absl::StrCat(
        recv->what, ": the message has ", u.bytes, " bytes, the Recv expects ", recv->bytes)));
  } else {
    std::memcpy(recv->data, u.data.data(), u.bytes);
    recv->work->Complete(absl::OkStatus());
  }
  // Mark for removal (the caller erases it).
  u.claimed = nullptr;
  u.bytes = -1;
}

bool PointToPoint::HasWork() const {
  if (stop_) return true;
  for (const Peer& p : peers_) {
    if (!p.sends.empty() || !p.recvs.empty() || p.incoming.active) return true;
    for (const Unexpected& u : p.unexpected) {
      if (u.claimed != nullptr) return true;
    }
  }
  return false;
}

bool PointToPoint::PushSends(int peer) {
  Peer& p = peers_[peer];
  if (p.sends.empty()) return false;
  Flag& head = segment_->head(rank_, peer);
  Flag& tail = segment_->tail(rank_, peer);
  char* ring = segment_->ring(rank_, peer);
  const int64_t ring_bytes = segment_->ring_bytes();
  uint64_t h = head.value.load(std::memory_order_relaxed);  // only this rank writes it
  bool moved = false;
  while (!p.sends.empty()) {
    Transfer& t = *p.sends.front();
    const int64_t free =
        ring_bytes - static_cast<int64_t>(h - tail.value.load(std::memory_order_acquire));
    if (!t.header_written) {
      if (free < kHeaderBytes) break;
      const int64_t header[2] = {t.tag, t.bytes};
      RingWrite(ring, ring_bytes, h, reinterpret_cast<const char*>(header), kHeaderBytes);
      h += kHeaderBytes;
      t.header_written = true;
      moved = true;
      continue;
    }
    const int64_t n = std::min(free, t.bytes - t.moved);
    if (n <= 0) break;
    RingWrite(ring, ring_bytes, h, t.data + t.moved, n);
    h += n;
    t.moved += n;
    moved = true;
    if (t.moved == t.bytes) {
      Publish(head, h);  // the bytes are the receiver's before the Work says they were sent
      t.work->Complete(absl::OkStatus());
      p.sends.pop_front();
    }
  }
  if (moved) Publish(head, h);
  return moved;
}

bool PointToPoint::PullMessages(int peer) {
  Peer& p = peers_[peer];
  bool claimed_pending = false;
  for (const Unexpected& u : p.unexpected) claimed_pending |= u.claimed != nullptr;
  if (p.recvs.empty() && !p.incoming.active && !claimed_pending) return false;
  Flag& head = segment_->head(peer, rank_);
  Flag& tail = segment_->tail(peer, rank_);
  const char* ring = segment_->ring(peer, rank_);
  const int64_t ring_bytes = segment_->ring_bytes();
  uint64_t t = tail.value.load(std::memory_order_relaxed);  // only this rank writes it
  bool moved = false;
  for (;;) {
    const int64_t avail = static_cast<int64_t>(head.value.load(std::memory_order_acquire) - t);
    Incoming& in = p.incoming;
    if (!in.active) {
      // Read the next message only while a Recv from this peer waits for one.
      if (p.recvs.empty() || avail < kHeaderBytes) break;
      int64_t header[2];
      RingRead(ring, ring_bytes, t, reinterpret_cast<char*>(header), kHeaderBytes);
      t += kHeaderBytes;
      moved = true;
      in = Incoming();
      in.active = true;
      in.tag = header[0];
      in.bytes = header[1];
      auto match =
          std::find_if(p.recvs.begin(), p.recvs.end(),
                       [&](const std::shared_ptr<Transfer>& r) { return r->tag == in.tag; });
      if (match != p.recvs.end()) {
        in.recv = *match;
        p.recvs.erase(match);
      } else {
        Unexpected& u = p.unexpected.emplace_back();
        u.tag = in.tag;
        u.bytes = in.bytes;
        u.data.resize(in.bytes);
        in.unexpected = &u;
      }
      if (in.recv != nullptr && in.recv->bytes != in.bytes) {
        // Drain the message aside and fail the Recv with the size mismatch.
        Unexpected& u = p.unexpected.emplace_back();
        u.tag = in.tag;
        u.bytes = in.bytes;
        u.data.resize(in.bytes);
        u.claimed = std::move(in.recv);
        in.recv = nullptr;
        in.unexpected = &u;
      }
      continue;
    }
    const int64_t n = std::min(avail, in.bytes - in.received);
    if (n > 0) {
      char* dst = in.recv != nullptr ? in.recv->data : in.unexpected->data.data();
      RingRead(ring, ring_bytes, t, dst + in.received, n);
      t += n;
      in.received += n;
      moved = true;
    }
    if (in.received < in.bytes) break;
    if (in.recv != nullptr) {
      in.recv->work->Complete(absl::OkStatus());
    } else {
      in.unexpected->received = in.bytes;
      if (in.unexpected->claimed != nullptr) {
        Deliver(*in.unexpected, in.unexpected->claimed);
      }
    }
    in = Incoming();
  }
  p.unexpected.remove_if([](const Unexpected& x) { return x.claimed == nullptr && x.bytes < 0; });
  if (moved) Publish(tail, t);
  return moved;
}

absl::Status PointToPoint::CheckPending(bool check_liveness, std::shared_ptr<WorkState>* failed) {
  const absl::Time now = absl::Now();
  for (int peer = 0; peer < static_cast<int>(peers_.size()); ++peer) {
    Peer& p = peers_[peer];
    std::vector<Transfer*> pending;
    for (auto& t : p.sends) pending.push_back(t.get());
    for (auto& t : p.recvs) pending.push_back(t.get());
    for (auto& u : p.unexpected) {
      if (u.claimed != nullptr) pending.push_back(u.claimed.get());
    }
    if (p.incoming.recv != nullptr) pending.push_back(p.incoming.recv.get());
    if (pending.empty()) continue;
    const bool gone = check_liveness && ProcessGone(segment_->pid(peer));
    for (Transfer* t : pending) {
      if (gone || now >= t->deadline) *failed = t->work;
      if (gone) {
        return absl::AbortedError(
            absl::StrCat(t->what, ": rank ", peer, " died (pid ", segment_->pid(peer), ")"));
      }
      if (now >= t->deadline) {
        return absl::DeadlineExceededError(absl::StrCat(t->what, ": timed out after ",
                                                        absl::FormatDuration(t->timeout),
                                                        " waiting for rank ", peer));
      }
    }
  }
  return absl::OkStatus();
}

void PointToPoint::ProgressLoop() {
  absl::Duration pause = absl::ZeroDuration();
  absl::Time next_liveness = absl::Now();
  absl::MutexLock lock(&mu_);
  for (;;) {
    mu_.Await(absl::Condition(
        +[](PointToPoint* self)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) { return self->HasWork(); },
        this));
    if (stop_) return;
    bool moved = false;
    for (int peer = 0; peer < static_cast<int>(peers_.size()); ++peer) {
      if (peer == rank_) continue;
      moved |= PushSends(peer);
      moved |= PullMessages(peer);
    }
    if (moved) {
      pause = absl::ZeroDuration();
      continue;
    }
    const absl::Time now = absl::Now();
    const bool check_liveness = now >= next_liveness;
    if (check_liveness) next_liveness = now + kLivenessInterval;
    std::shared_ptr<WorkState> failed;
    absl::Status failure = CheckPending(check_liveness, &failed);
    if (failure.ok() && segment_->Failed()) {
      failure = absl::AbortedError(absl::StrCat("the group failed: ", *segment_->Failure()));
    }
    if (!failure.ok()) {
      if (failed != nullptr) failed->Complete(failure);  // its own error, not "poisoned"
      mu_.Unlock();
      const absl::Status first = poison_(failure);  // calls FailAll
      mu_.Lock();
      FailAllLocked(first);
      continue;
    }
    // Nothing moved: pause a little longer each time, without the lock so Posts get in.
    pause = std::min(kMaxPause, pause + absl::Microseconds(5));
    mu_.Unlock();
    if (pause <= absl::Microseconds(10)) {
      std::this_thread::yield();
    } else {
      absl::SleepFor(pause);
    }
    mu_.Lock();
  }
}

}  // namespace dstrain::comm::shm_internal
