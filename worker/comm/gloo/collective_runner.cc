#include "worker/comm/gloo/collective_runner.h"

#include <algorithm>
#include <exception>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace dstrain::comm::gloo_internal {

Runtime::CollectiveRunner::CollectiveRunner(Runtime* runtime, int64_t seq, absl::Time deadline,
                                            absl::Duration timeout)
    : runtime_(runtime),
      seq_(seq),
      slot_(CollectiveSlot(seq)),
      deadline_(deadline),
      timeout_(timeout) {}

Runtime::CollectiveRunner::~CollectiveRunner() {
  for (Transfer& t : transfers_) runtime_->Unregister(t.buffer.get());
}

absl::Status Runtime::CollectiveRunner::WaitAll() {
  for (; waited_ < transfers_.size(); ++waited_) {
    Transfer& t = transfers_[waited_];
    bool completed = false;
    try {
      completed = Wait(t, deadline_);
      if (!completed) {
        // Interrupted. By Abort (or a failure elsewhere): give up. By a peer's failure record
        // or a broken connection: the transfer may have completed just before, so look again
        // briefly; a wait that times out now fails the operation.
        if (absl::Status poisoned = runtime_->AsyncError(); !poisoned.ok()) {
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

bool Runtime::CollectiveRunner::Wait(Transfer& t, absl::Time deadline) {
  const auto wait = ToMillis(deadline - absl::Now());
  return t.send ? t.buffer->waitSend(wait) : t.buffer->waitRecv(wait);
}

absl::Status Runtime::CollectiveRunner::Post(bool send, int peer, void* data, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();  // both sides skip empty transfers
  Transfer t{nullptr, peer, send};
  try {
    t.buffer = runtime_->context_->createUnboundBuffer(data, bytes);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("creating a Gloo buffer: ", e.what()));
  }
  if (absl::Status s = runtime_->Register(t.buffer.get(), seq_, peer); !s.ok()) {
    if (runtime_->Interrupted(seq_)) {
      return absl::AbortedError(runtime_->records_.PeerFailure(seq_));
    }
    return s;
  }
  gloo::transport::UnboundBuffer* raw = t.buffer.get();
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

absl::Status Runtime::CollectiveRunner::Failure(const Transfer& t, absl::string_view what) {
  const std::string broken = runtime_->BrokenConnection(t.peer);
  if (broken.empty() && runtime_->Interrupted(seq_)) {
    return absl::AbortedError(runtime_->records_.PeerFailure(seq_));
  }
  if (broken.empty() && (absl::StrContains(what, "Timed out") || absl::Now() >= deadline_)) {
    return absl::DeadlineExceededError(
        absl::StrCat("timed out after ", absl::FormatDuration(timeout_), " waiting for ",
                     t.send ? absl::StrCat("rank ", t.peer, " to accept data")
                            : absl::StrCat("data from rank ", t.peer)));
  }
  // The connection broke: if the peer failed this operation first and said why, say that.
  if (std::optional<std::string> why = runtime_->records_.Record(seq_, t.peer)) {
    return absl::AbortedError(absl::StrCat("rank ", t.peer, " failed first: ", *why));
  }
  return absl::AbortedError(absl::StrCat("lost the connection to rank ", t.peer, " (",
                                         broken.empty() ? what : broken, ")"));
}

}  // namespace dstrain::comm::gloo_internal
