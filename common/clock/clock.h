// Clock: where the control plane reads the time, so leases, heartbeats and timeouts can be tested
// with a clock the test moves by hand instead of sleeps.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace dstrain {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// The system's wall clock (absl::Now). Process-wide, never destroyed.
class RealClock final : public Clock {
 public:
  static RealClock* Default() {
    static RealClock* clock = new RealClock();
    return clock;
  }
  absl::Time Now() const override { return absl::Now(); }
};

// A clock that stands still until a test moves it. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'700'000'000)) : now_(start) {}

  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dstrain
