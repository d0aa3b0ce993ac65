#include "coordinator/state/state_keys.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace dstrain::coordinator::state_keys {
namespace {

void AppendBigEndian(uint64_t value, int bytes, std::string* out) {
  for (int shift = 8 * (bytes - 1); shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

uint64_t ReadBigEndian(absl::string_view bytes) {
  uint64_t value = 0;
  for (char c : bytes) value = (value << 8) | static_cast<unsigned char>(c);
  return value;
}

bool IsJobIdChar(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }

}  // namespace

absl::Status ValidateJobId(absl::string_view job_id) {
  if (job_id.empty() || job_id.size() > kMaxJobIdLength) {
    return absl::InvalidArgumentError(absl::StrCat("job id \"", absl::CHexEscape(job_id),
                                                   "\" must have 1 to ", kMaxJobIdLength,
                                                   " characters"));
  }
  for (char c : job_id) {
    if (!IsJobIdChar(c)) {
      return absl::InvalidArgumentError(
          absl::StrCat("job id \"", absl::CHexEscape(job_id), "\" may contain only [a-z0-9-]"));
    }
  }
  return absl::OkStatus();
}

std::string JobPrefix(absl::string_view job_id) { return absl::StrCat(job_id, "/"); }

std::string EventKey(absl::string_view job_id, uint64_t sequence) {
  std::string key = JobPrefix(job_id);
  AppendBigEndian(sequence, 8, &key);
  return key;
}

std::string CheckpointKey(absl::string_view job_id, absl::string_view tag) {
  return absl::StrCat(JobPrefix(job_id), tag);
}

std::string MetricsKey(absl::string_view job_id, uint32_t attempt, uint64_t step) {
  std::string key = JobPrefix(job_id);
  AppendBigEndian(attempt, 4, &key);
  AppendBigEndian(step, 8, &key);
  return key;
}

std::string LogKey(absl::string_view job_id, uint64_t sequence) {
  return EventKey(job_id, sequence);  // the same layout, in another table
}

std::optional<uint64_t> DecodeSequence(absl::string_view key, size_t prefix_size) {
  if (key.size() != prefix_size + 8) return std::nullopt;
  return ReadBigEndian(key.substr(prefix_size));
}

std::optional<MetricsPosition> DecodeMetricsKey(absl::string_view key, size_t prefix_size) {
  if (key.size() != prefix_size + 12) return std::nullopt;
  return MetricsPosition{static_cast<uint32_t>(ReadBigEndian(key.substr(prefix_size, 4))),
                         ReadBigEndian(key.substr(prefix_size + 4))};
}

}  // namespace dstrain::coordinator::state_keys
