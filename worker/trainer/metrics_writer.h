// One JSON object per optimizer step, appended to a JSONL file (`train --metrics-out`).
//
// Floats are written in their shortest form that parses back to the same double (std::to_chars),
// so a reader recovers exactly what the trainer computed. Each line is flushed as written so a
// crashed run keeps every completed step. Not thread-safe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dstrain::trainer {

// Builds one JSON object: {"step":1,"loss":3.25,...}. Keys are written in insertion order.
class JsonLine {
 public:
  JsonLine& Add(absl::string_view key, double value);
  JsonLine& Add(absl::string_view key, int64_t value);
  JsonLine& Add(absl::string_view key, bool value);
  JsonLine& AddRaw(absl::string_view key, absl::string_view json);  // value already JSON
  std::string str() const { return body_ + "}"; }

 private:
  void Key(absl::string_view key);
  std::string body_ = "{";
};

// Shortest round-trip decimal form of a double; non-finite values as null (JSON has no inf).
std::string FormatDouble(double v);

class MetricsWriter {
 public:
  // Opens (truncates) `path`; an empty path gives a writer that discards everything.
  static absl::StatusOr<MetricsWriter> Open(const std::string& path);
  MetricsWriter(MetricsWriter&& other) noexcept;
  MetricsWriter& operator=(MetricsWriter&&) = delete;
  ~MetricsWriter();

  absl::Status Write(const JsonLine& line);

 private:
  MetricsWriter(std::FILE* f, std::string path) : file_(f), path_(std::move(path)) {}
  std::FILE* file_ = nullptr;
  std::string path_;
};

}  // namespace dstrain::trainer
