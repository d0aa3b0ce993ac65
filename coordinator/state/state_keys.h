// The key schema of CoordinatorState: how jobs, events, workers, checkpoints, metrics and logs
// are laid out in the KvDb tables. Changing a layout makes existing databases unreadable.
//
// NOTE [Key schema]
//   table        key                                        value
//   jobs         <job_id>                                   v1::Job
//   job_events   <job_id> '/' <sequence: 8 bytes BE>        v1::JobEvent
//   workers      <worker_id>                                v1::Worker
//   checkpoints  <job_id> '/' <tag>                         v1::Checkpoint
//   metrics      <job_id> '/' <attempt: 4 bytes BE> <step: 8 bytes BE>   v1::StepMetrics
//   logs         <job_id> '/' <sequence: 8 bytes BE>        v1::LogLine
//   kv           the caller's key                           the caller's bytes
// Job ids are 1 to 63 characters of [a-z0-9-], so '/' ends the id unambiguously and
// "<job_id>/" prefixes exactly one job's records. Numbers are fixed-width big-endian unsigned, so
// bytewise key order is numeric order (negative numbers are refused before they get here). Event
// and log sequences are not stored separately: the next one is one past the job's last key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dstrain::coordinator::state_keys {

inline constexpr char kSeparator = '/';
inline constexpr size_t kMaxJobIdLength = 63;

// kInvalidArgument unless `job_id` is 1 to kMaxJobIdLength characters of [a-z0-9-] (the
// characters the schema relies on; the service checks the rest of the id rules).
absl::Status ValidateJobId(absl::string_view job_id);

// "<job_id>/": the prefix of every per-job key in job_events, checkpoints, metrics and logs.
std::string JobPrefix(absl::string_view job_id);

std::string EventKey(absl::string_view job_id, uint64_t sequence);
std::string CheckpointKey(absl::string_view job_id, absl::string_view tag);
std::string MetricsKey(absl::string_view job_id, uint32_t attempt, uint64_t step);
std::string LogKey(absl::string_view job_id, uint64_t sequence);

// The sequence of an EventKey or LogKey whose job prefix is `prefix_size` bytes long; nullopt
// when the key has the wrong length.
std::optional<uint64_t> DecodeSequence(absl::string_view key, size_t prefix_size);

struct MetricsPosition {
  uint32_t attempt;
  uint64_t step;
};
// The attempt and step of a MetricsKey; nullopt when the key has the wrong length.
std::optional<MetricsPosition> DecodeMetricsKey(absl::string_view key, size_t prefix_size);

}  // namespace dstrain::coordinator::state_keys
