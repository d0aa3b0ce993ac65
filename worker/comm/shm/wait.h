// Waiting on the flags of a Segment: publish with release, wait with acquire, spinning first (a
// peer a few microseconds behind costs no system call), then yielding, then asleep in futex(2)
// (a peer far behind costs no CPU, which matters when ranks outnumber cores). Every wait is
// bounded by the operation's deadline and watches three more things, so nothing hangs:
//   - this communicator's Abort (a flag in this process),
//   - the group's failure record in the segment (a peer gave up: fail now, not at our deadline),
//   - the liveness of the ranks waited for (a pid that no longer exists, or a zombie, died).
// A sleeping waiter wakes at least every few milliseconds to look at those.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/comm/shm/segment.h"

namespace dstrain::comm::shm_internal {

// Sets flag.value = value (release) and wakes the threads asleep on it.
void Publish(Flag& flag, uint64_t value);

// What a wait is bounded by.
struct WaitBounds {
  const Segment* segment = nullptr;
  const std::atomic<bool>* aborted = nullptr;  // this communicator's Abort
  absl::Time deadline = absl::InfiniteFuture();
  absl::Duration timeout = absl::InfiniteDuration();  // what the deadline came from, for messages
};

// Waits until flag_of(q).value >= target for every rank q in [0, size) other than `skip` (-1:
// none). Errors (the message is a sentence fragment the caller prefixes with the operation):
//   kAborted "aborted" when this communicator was aborted (the caller has the reason);
//   kAborted "<the group's failure record>" when a peer recorded a failure;
//   kAborted "rank(s) [q] died (pid p) ..." when a rank waited for is gone;
//   kDeadlineExceeded "timed out after <timeout> waiting for rank(s) [q, ...] <what>".
absl::Status WaitAll(const WaitBounds& bounds, int size, int skip,
                     absl::FunctionRef<Flag&(int rank)> flag_of, uint64_t target,
                     absl::string_view what);

// Whether process `pid` is gone (no such process, or a zombie). False for this process.
bool ProcessGone(int64_t pid);

// A short pause for spin loops.
void CpuRelax();

}  // namespace dstrain::comm::shm_internal
