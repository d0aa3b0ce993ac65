// absl::Time -> google.protobuf.Timestamp for the reports the agent sends.
#pragma once

#include <cstdint>

#include "absl/time/time.h"
#include "google/protobuf/timestamp.pb.h"

namespace dstrain::agent {

// Seconds floored toward the past, so nanos is always in [0, 1e9) as Timestamp requires.
inline google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t seconds = absl::ToUnixSeconds(t);
  ts.set_seconds(seconds);
  ts.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(seconds))));
  return ts;
}

}  // namespace dstrain::agent
