// A token bucket: an allowance that refills at `rate` per second up to `burst` and starts full.
// The coordinator meters a job's log lines (ReportStatus) and each principal's submissions
// (SubmitJob) with it. Not thread-safe: its owner's lock guards it.
#pragma once

#include <algorithm>

#include "absl/time/time.h"

namespace dstrain::coordinator {

class RateBucket {
 public:
  // What may be taken at `now`, after refilling for the time since the last call.
  double Available(absl::Time now, double rate, double burst) {
    if (left_ < 0) {
      left_ = burst;
    } else {
      left_ = std::min(burst, left_ + rate * absl::ToDoubleSeconds(now - counted_));
    }
    counted_ = now;
    return left_;
  }
  // Takes `n` (at most what Available returned).
  void Take(double n) { left_ -= n; }

 private:
  double left_ = -1;  // -1: never used, full
  absl::Time counted_;
};

}  // namespace dstrain::coordinator
