// Following rank 0's metrics JSONL (`dstrain train --metrics-out`) and turning its lines into
// StepMetrics.
//
// MetricsTail re-reads a growing file from where it left off and hands out complete lines only,
// so a line the trainer is still writing is never parsed half-way. The file may not exist yet
// (the trainer creates it at its first step); a file that shrank or was replaced is read again
// from its start. StepMetricsParser maps one line onto v1::StepMetrics.
//
// Neither class is thread-safe; each belongs to the thread that supervises the trainer.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/common.pb.h"

namespace dstrain::agent {

class MetricsTail {
 public:
  // `max_read` bounds the bytes one Poll reads, so a huge backlog is taken in pieces.
  explicit MetricsTail(std::string path, size_t max_read = 1 << 20)
      : path_(std::move(path)), max_read_(max_read) {}

  // Appends the lines completed since the previous call (without their newline) to *lines. OK
  // with nothing appended while the file does not exist; an error only when it exists and cannot
  // be read.
  absl::Status Poll(std::vector<std::string>* lines);

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  size_t max_read_;
  int64_t offset_ = 0;  // bytes consumed so far
  ino_t inode_ = 0;     // of the file read so far; 0 before the first read
  dev_t device_ = 0;
  std::string partial_;  // bytes after the last newline
};

// One metrics line, parsed.
struct ParsedStep {
  v1::StepMetrics metrics;
  // Steps skipped since the previous line (0 or 1 for the trainer's per-step "skipped" flag).
  int64_t skipped_increment = 0;
  // The trainer's device memory, when the line has it (a trainer on a GPU): bytes in use after
  // the step ("device_mem_bytes") and the most in use so far ("device_mem_peak_bytes").
  std::optional<int64_t> device_mem_bytes;
  std::optional<int64_t> device_mem_peak_bytes;
  // NVMe offload, when the line has it: the swap files' bytes ("nvme_bytes") and the seconds the
  // step waited for them ("swap_wait_s").
  std::optional<int64_t> nvme_bytes;
  std::optional<double> swap_wait_seconds;
  // The step's checkpoint save failed ("checkpoint_error": the trainer's message); the trainer
  // exits with that error next.
  bool checkpoint_failed = false;
};

// Maps JSONL keys onto StepMetrics: step, loss, lr, grad_norm, loss_scale; tokens_per_s →
// tokens_per_second; step_ms / 1000 → step_seconds; val_loss when present; mem_bytes (an object
// of category → bytes) → memory_bytes; comm_bytes. "skipped" is either the trainer's per-step
// flag (true/false; the parser keeps the running count) or a cumulative count (a number). "time"
// (Unix seconds) when present, else the time the agent read the line. A JSON null (how the
// trainer writes a non-finite float) becomes NaN. device_mem_bytes and device_mem_peak_bytes (a
// number >= 0) go to ParsedStep, not StepMetrics, as do nvme_bytes and swap_wait_s (numbers >= 0)
// and checkpoint_error (present: checkpoint_failed).
// Unknown keys are ignored.
class StepMetricsParser {
 public:
  explicit StepMetricsParser(int32_t attempt) : attempt_(attempt) {}

  // INVALID_ARGUMENT when the line is not a JSON object or has no integer "step".
  absl::StatusOr<ParsedStep> Parse(absl::string_view line, absl::Time read_time);

  int64_t skipped_steps() const { return skipped_; }

 private:
  int32_t attempt_;
  int64_t skipped_ = 0;
};

}  // namespace dstrain::agent
