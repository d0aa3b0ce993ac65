#include "common/retry/retry.h"

#include <algorithm>
#include <random>

#include "absl/time/clock.h"

namespace dstrain::retry {

ErrorClass Classify(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:
      return ErrorClass::kTransient;
    case absl::StatusCode::kOk:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return ErrorClass::kPermanent;
    default:
      // NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN, DATA_LOSS, and a
      // code from a newer peer that this table does not know yet.
      return ErrorClass::kStateful;
  }
}

uint64_t RandomSeed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device() ^
         static_cast<uint64_t>(absl::GetCurrentTimeNanos());
}

namespace {

BackoffOptions InRange(BackoffOptions o) {
  o.initial = std::max(o.initial, absl::ZeroDuration());
  o.max = std::max(o.max, o.initial);
  o.multiplier = std::max(o.multiplier, 1.0);
  o.jitter = std::clamp(o.jitter, 0.0, 1.0);
  return o;
}

}  // namespace

Backoff::Backoff(const BackoffOptions& options, uint64_t seed)
    : options_(InRange(options)), base_(options_.initial), rng_(seed) {}

absl::Duration Backoff::Next() {
  const absl::Duration wait = base_ - base_ * (options_.jitter * rng_.Uniform());
  base_ = std::min(base_ * options_.multiplier, options_.max);
  ++retries_;
  return std::max(wait, absl::ZeroDuration());
}

void Backoff::Reset() {
  base_ = options_.initial;
  retries_ = 0;
}

RealSleeper* RealSleeper::Default() {
  static RealSleeper* const sleeper = new RealSleeper();
  return sleeper;
}

bool RealSleeper::Sleep(absl::Duration d) {
  absl::SleepFor(d);
  return true;
}

absl::Status Retry(const RetryOptions& options, const Clock& clock, Sleeper& sleeper,
                   absl::FunctionRef<absl::Status()> attempt, uint64_t seed) {
  Backoff backoff(options.backoff, seed);
  while (true) {
    absl::Status status = attempt();
    if (!IsTransient(status)) return status;
    const absl::Time now = clock.Now();
    if (now >= options.deadline) return status;
    const absl::Duration wait = std::min(backoff.Next(), options.deadline - now);
    if (!sleeper.Sleep(wait)) return status;
    if (clock.Now() > options.deadline) return status;
  }
}

}  // namespace dstrain::retry
