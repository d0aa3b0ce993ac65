#include "client/cli/output.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cctype>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace dstrain::cli {
namespace {

// "JOB_STATE_RUNNING" minus "JOB_STATE_" -> "RUNNING".
template <typename Enum>
std::string ShortName(const std::string& full, absl::string_view prefix, Enum value) {
  if (full.empty()) return absl::StrCat("UNKNOWN(", static_cast<int>(value), ")");
  return std::string(absl::StripPrefix(full, prefix));
}

}  // namespace

std::string Table::Render() const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  const size_t columns = rows_.empty() ? 0 : rows_[0].size();
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    const size_t n = std::max(columns, row.size());
    for (size_t i = 0; i < n; ++i) {
      const std::string cell = i < row.size() ? row[i] : "";
      if (i > 0) line += "   ";
      line += cell;
      if (i + 1 < n) line.append(widths[i] - cell.size(), ' ');
    }
    // Empty trailing cells leave trailing blanks; drop them.
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string JobStateName(v1::JobState state) {
  return ShortName(v1::JobState_Name(state), "JOB_STATE_", state);
}

std::string WorkerStateName(v1::WorkerState state) {
  return ShortName(v1::WorkerState_Name(state), "WORKER_STATE_", state);
}

std::string CheckpointStateName(v1::CheckpointState state) {
  return ShortName(v1::CheckpointState_Name(state), "CHECKPOINT_STATE_", state);
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

absl::StatusOr<v1::JobState> ParseJobState(const std::string& text) {
  std::string name = absl::AsciiStrToUpper(text);
  if (!absl::StartsWith(name, "JOB_STATE_")) name = absl::StrCat("JOB_STATE_", name);
  v1::JobState state;
  if (name != "JOB_STATE_UNSPECIFIED" && v1::JobState_Parse(name, &state)) return state;
  std::vector<std::string> known;
  for (int i = v1::JobState_MIN; i <= v1::JobState_MAX; ++i) {
    if (v1::JobState_IsValid(i) && i != v1::JOB_STATE_UNSPECIFIED) {
      known.push_back(JobStateName(static_cast<v1::JobState>(i)));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("--state: unknown job state '", text, "' (one of ",
                                                 absl::StrJoin(known, ", "), ")"));
}

std::string FormatAge(absl::Duration d) {
  if (d < absl::ZeroDuration() || d == absl::InfiniteDuration()) return "-";
  const int64_t s = absl::ToInt64Seconds(d);
  if (s < 120) return absl::StrCat(s, "s");
  if (s < 120 * 60) return absl::StrCat(s / 60, "m");
  if (s < 48 * 3600) return absl::StrCat(s / 3600, "h");
  return absl::StrCat(s / 86400, "d");
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int unit = -1;
  while (v >= 1024 && unit < 3) {
    v /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", v, kUnits[unit]);
}

absl::Time ToTime(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return absl::InfinitePast();
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

std::string FormatTimestamp(const google::protobuf::Timestamp& ts, absl::TimeZone tz) {
  const absl::Time t = ToTime(ts);
  if (t == absl::InfinitePast()) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", t, tz);
}

std::string FormatTimestampAge(const google::protobuf::Timestamp& ts, absl::Time now) {
  const absl::Time t = ToTime(ts);
  if (t == absl::InfinitePast()) return "-";
  return FormatAge(now - t);
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  const auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot print ", message.GetTypeName(), " as JSON: ", status.ToString()));
  }
  if (out.empty() || out.back() != '\n') out.push_back('\n');
  return out;
}

}  // namespace dstrain::cli
