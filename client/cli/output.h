// Output formatting of the service commands (`dstrain list|status|workers|checkpoints ...`):
// aligned tables, ages, byte sizes, timestamps, state names and protos as JSON.
//
// Thread-safety: the functions are reentrant; Table is a plain value.
#pragma once

#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/checkpoint.pb.h"
#include "proto/common.pb.h"
#include "proto/worker.pb.h"

namespace dstrain::cli {

// Columns padded to their widest cell and separated by three spaces (the last column is not
// padded); every line ends in '\n'. Rows shorter than the header get empty cells.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// "RUNNING" for JOB_STATE_RUNNING; "UNKNOWN(9)" for a value this build does not know.
std::string JobStateName(v1::JobState state);
std::string WorkerStateName(v1::WorkerState state);
std::string CheckpointStateName(v1::CheckpointState state);
bool IsTerminal(v1::JobState state);

// "running", "RUNNING" or "JOB_STATE_RUNNING" -> JOB_STATE_RUNNING; kInvalidArgument listing the
// states otherwise.
absl::StatusOr<v1::JobState> ParseJobState(const std::string& text);

// kubectl-style age: "45s", "12m", "5h", "3d" (under 2 minutes in seconds, under 2 hours in
// minutes, under 2 days in hours); "-" for a negative or infinite duration.
std::string FormatAge(absl::Duration d);

// 999 -> "999 B", 1536 -> "1.5 KiB", up to TiB.
std::string FormatBytes(int64_t bytes);

// An unset timestamp (0) is absl::InfinitePast().
absl::Time ToTime(const google::protobuf::Timestamp& ts);
// "2025-05-01 12:00:00" in `tz`; "-" for an unset timestamp.
std::string FormatTimestamp(const google::protobuf::Timestamp& ts, absl::TimeZone tz);
// Age of an event: now - ts, "-" for an unset timestamp.
std::string FormatTimestampAge(const google::protobuf::Timestamp& ts, absl::Time now);

// The message as one JSON document (proto3 JSON mapping, field names as in the .proto, every
// field printed, indented), ending in '\n'.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message);

}  // namespace dstrain::cli
