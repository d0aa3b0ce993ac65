// Retry: which failed calls are worth repeating, and how long to wait between the tries. One
// policy for every client of the coordinator (the worker agent, the `dstrain` CLI, the trainer's
// checkpoint catalog), so they agree on what "the coordinator is away" looks like.
//
// Classification. gRPC and absl share the canonical codes (common/grpc/grpc_status.h converts);
// each code is in exactly one class:
//
//   Transient: retried with backoff for as long as the caller is willing to wait.
//     UNAVAILABLE        The server cannot be reached or is not serving: down, restarting,
//                        refusing or resetting connections, shutting down (the coordinator answers
//                        UNAVAILABLE then, and for a RocksDB I/O error it expects to clear). The
//                        canonical "try again later".
//     DEADLINE_EXCEEDED  The call ran out of time on a slow, overloaded or unreachable server. It
//                        may have been applied nevertheless, so callers retry only requests that
//                        are safe to repeat (RegisterShard replaces the rank's record,
//                        CommitCheckpoint accepts a repeated commit of the same path, streams
//                        resume from a position).
//     ABORTED            The server gave this call up because of a concurrent one (a RocksDB
//                        transaction conflict, an assignment stream replaced by a newer one); the
//                        same call later can succeed.
//     CANCELLED          The call was cancelled. gRPC cancels the calls in flight when a server
//                        shuts down, and a restart should not end a client. The policy cannot tell
//                        that from a cancellation by the caller itself, so a caller that cancels
//                        its own calls (at shutdown) checks its own stop flag before retrying.
//
//   Permanent: never retried; the same request gets the same answer.
//     INVALID_ARGUMENT, OUT_OF_RANGE   The request is malformed or outside what the server takes.
//     ALREADY_EXISTS                   What the request would create is there already.
//     UNIMPLEMENTED                    The server lacks the method (a version mismatch).
//     PERMISSION_DENIED, UNAUTHENTICATED   Credentials do not change by waiting.
//
//   Stateful: not transient, but the answer depends on the server's state, which other calls
//   may change; a caller that expects such a change (the agent's reports outlast a
//   re-registration) retries a bounded number of times, any other caller gives up.
//     NOT_FOUND, FAILED_PRECONDITION   The server's state does not allow the call now (a worker
//                                      it forgot, a checkpoint already committed elsewhere).
//     RESOURCE_EXHAUSTED               A full disk (the coordinator's RocksDB and the Env map
//                                      ENOSPC here) or a message over gRPC's size limit: neither
//                                      clears by retrying soon.
//     INTERNAL, UNKNOWN, DATA_LOSS     A broken invariant or corrupt data on the server; the
//                                      same call repeats it. (A broken connection is UNAVAILABLE,
//                                      not INTERNAL.)
//   OK is not a failure and is never retried (Classify returns kPermanent for it).
//
// Backoff: capped exponential with jitter. The n-th wait since the last success is
// initial * multiplier^(n-1), at most `max`, shortened by a random fraction below `jitter` so that
// clients failing together (every agent when the coordinator restarts) do not retry in lockstep.
// A wait is never longer than `max` and never negative.
//
// Deadline: Retry() starts no attempt after the deadline and no wait it makes ends after it.
//
// Thread-safety: Classify and Retry are reentrant; a Backoff is used by one thread at a time.
#pragma once

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/clock/clock.h"
#include "common/random/rng.h"

namespace dstrain::retry {

enum class ErrorClass { kTransient, kPermanent, kStateful };

// The class of `code`, as the table above lists it.
ErrorClass Classify(absl::StatusCode code);
inline bool IsTransient(absl::StatusCode code) { return Classify(code) == ErrorClass::kTransient; }
inline bool IsTransient(const absl::Status& status) { return IsTransient(status.code()); }
inline bool IsPermanent(absl::StatusCode code) { return Classify(code) == ErrorClass::kPermanent; }

struct BackoffOptions {
  // The first wait; at least zero.
  absl::Duration initial = absl::Milliseconds(100);
  // The cap of every wait; raised to `initial` when below it.
  absl::Duration max = absl::Seconds(5);
  // Growth of the wait per retry; at least 1.
  double multiplier = 2.0;
  // Each wait is shortened by a random fraction in [0, jitter); in [0, 1], 0 for exact waits.
  double jitter = 0.2;
};

// A fresh seed for a Backoff's jitter, different in every process and call.
uint64_t RandomSeed();

// The waits between the tries of one retry loop.
class Backoff {
 public:
  // Out-of-range options are brought into range as BackoffOptions says. `seed` makes the jitter
  // reproducible (tests).
  explicit Backoff(const BackoffOptions& options, uint64_t seed = RandomSeed());

  // The wait before the next try (see "Backoff" above); each call counts one retry.
  absl::Duration Next();
  // After a success: the next wait is about `initial` again.
  void Reset();
  // Next() calls since construction or the last Reset().
  int retries() const { return retries_; }
  const BackoffOptions& options() const { return options_; }

 private:
  BackoffOptions options_;
  absl::Duration base_;  // the next wait before jitter
  int retries_ = 0;
  Rng rng_;
};

// Where Retry() waits, so tests can move a FakeClock instead of sleeping.
class Sleeper {
 public:
  virtual ~Sleeper() = default;
  // Waits `d`; false when the wait ended early because the caller is stopping (the retries end).
  virtual bool Sleep(absl::Duration d) = 0;
};

// absl::SleepFor; never stops early. Process-wide, never destroyed.
class RealSleeper final : public Sleeper {
 public:
  static RealSleeper* Default();
  bool Sleep(absl::Duration d) override;
};

struct RetryOptions {
  BackoffOptions backoff;
  // As read from the Clock given to Retry(); InfiniteFuture: for as long as errors are transient.
  absl::Time deadline = absl::InfiniteFuture();
};

// Calls `attempt` until it returns OK or an error that is not transient, and returns that. While
// errors are transient it waits (Backoff, on `sleeper`) and tries again; when the deadline has
// passed or `sleeper` reports a stop it returns the last error instead. The first attempt is made
// whatever the deadline; later ones start no later than the deadline, and waits are shortened to
// end at it.
absl::Status Retry(const RetryOptions& options, const Clock& clock, Sleeper& sleeper,
                   absl::FunctionRef<absl::Status()> attempt, uint64_t seed = RandomSeed());

}  // namespace dstrain::retry
