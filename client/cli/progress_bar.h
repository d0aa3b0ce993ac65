// The live progress line of `dstrain watch` and `dstrain submit --follow`:
//
//   step 120/500 [====>               ] 24% loss 2.314 1,234 tok/s ETA 3m05s
//
// Pure functions of a ProgressState, so the ETA math, the bar and the width limits are tested
// without a terminal. StepRateEstimator turns the steps' timestamps into seconds per step.
//
// Thread-safety: the functions are reentrant; StepRateEstimator is not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"

namespace dstrain::cli {

// What the progress line shows. Unknown values are left unset (or 0 for `total`) and the line
// leaves their part out.
struct ProgressState {
  int64_t step = 0;   // last finished optimizer step
  int64_t total = 0;  // job.train_steps; 0 = unknown (no bar, no percentage, no ETA)
  std::optional<double> loss;
  std::optional<double> tokens_per_second;
  // Wall time per step, for the ETA ((total - step) * seconds_per_step); unset = no ETA.
  std::optional<double> seconds_per_step;
  // The loss of the last steps, oldest first, drawn as a sparkline after the loss (at most
  // kSparklineCells of them; empty: none).
  std::vector<double> loss_history;
};

// Cells of the loss sparkline in the progress line.
inline constexpr int kSparklineCells = 16;

// One cell per value, the eight block characters U+2581..U+2588 (UTF-8) scaled from the
// smallest finite value to the largest; a non-finite value (a NaN loss) is '!'. All-equal
// values draw the lowest block.
std::string FormatSparkline(const std::vector<double>& values);

// The line, without a newline or carriage return. `max_columns` bounds its length in terminal
// columns (a terminal's width; 0 = no bound): the loss sparkline is left out first, then the bar
// shrinks (from 30 down to 10 cells, then is left out), then the line is cut. The percentage is
// rounded down, so 100% means done.
std::string FormatProgressLine(const ProgressState& state, int max_columns = 0);

// "[=====>    ]": `width` cells between the brackets, filled in proportion to step / total
// (clamped to [0, 1]); '>' marks the head until the bar is full. total <= 0 gives an empty bar.
std::string FormatBar(int64_t step, int64_t total, int width);

// Compact remaining time: "45s", "3m05s", "1h02m", "2d03h". Negative durations print as "0s";
// an infinite one as "?".
std::string FormatEta(absl::Duration d);

// 1234567 -> "1,234,567"; negative numbers keep their sign.
std::string FormatThousands(int64_t n);

// Seconds per optimizer step from (step, time) observations over a sliding window. A step that is
// not after the previous one (a restart resuming from a checkpoint re-runs steps) starts over.
class StepRateEstimator {
 public:
  explicit StepRateEstimator(size_t window = 20) : window_(window < 2 ? 2 : window) {}

  void Add(int64_t step, absl::Time time);
  // Over the window; unset until two steps with distinct times were seen.
  std::optional<double> SecondsPerStep() const;

 private:
  size_t window_;
  std::deque<std::pair<int64_t, absl::Time>> points_;
};

}  // namespace dstrain::cli
