#include "client/cli/progress_bar.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dstrain::cli {
namespace {

constexpr int kMaxBarWidth = 30;
constexpr int kMinBarWidth = 10;

}  // namespace

std::string FormatBar(int64_t step, int64_t total, int width) {
  width = std::max(width, 0);
  int filled = 0;
  if (total > 0 && step > 0) {
    filled = static_cast<int>(std::min<int64_t>(step, total) * width / total);
  }
  std::string bar = "[";
  bar.append(filled, '=');
  if (filled < width) {
    // The head takes the next cell, except for an empty bar of an unknown total.
    if (total > 0) {
      bar.push_back('>');
      bar.append(width - filled - 1, ' ');
    } else {
      bar.append(width - filled, ' ');
    }
  }
  bar.push_back(']');
  return bar;
}

std::string FormatEta(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return "?";
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  const int64_t s = std::llround(absl::ToDoubleSeconds(d));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, s % 86400 / 3600);
}

std::string FormatThousands(int64_t n) {
  // Work on the magnitude as unsigned so INT64_MIN has one.
  const bool negative = n < 0;
  uint64_t m = negative ? 0 - static_cast<uint64_t>(n) : static_cast<uint64_t>(n);
  std::string digits = absl::StrCat(m);
  std::string out;
  const int lead = static_cast<int>(digits.size() % 3);
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (static_cast<int>(i) - lead) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return negative ? absl::StrCat("-", out) : out;
}

std::string FormatProgressLine(const ProgressState& state, int max_columns) {
  const bool known_total = state.total > 0;
  const std::string head = known_total ? absl::StrCat("step ", state.step, "/", state.total)
                                       : absl::StrCat("step ", state.step);
  std::string percent;
  if (known_total) {
    const int64_t p = std::clamp<int64_t>(
        static_cast<int64_t>(std::max<int64_t>(state.step, 0) * 100.0 / state.total), 0, 100);
    percent = absl::StrCat(p, "%");
  }
  std::string tail;
  if (state.loss) absl::StrAppend(&tail, " loss ", absl::StrFormat("%.4g", *state.loss));
  if (state.tokens_per_second && std::isfinite(*state.tokens_per_second)) {
    absl::StrAppend(&tail, " ", FormatThousands(std::llround(*state.tokens_per_second)), " tok/s");
  }
  if (known_total && state.seconds_per_step && std::isfinite(*state.seconds_per_step) &&
      *state.seconds_per_step >= 0) {
    const int64_t left = std::max<int64_t>(state.total - state.step, 0);
    absl::StrAppend(&tail, " ETA ",
                    FormatEta(absl::Seconds(static_cast<double>(left) * *state.seconds_per_step)));
  }

  std::string line = head;
  if (known_total) {
    // "step S/T [bar] P%": the bar gets what the bound leaves, within [kMinBarWidth, kMaxBarWidth].
    int width = kMaxBarWidth;
    if (max_columns > 0) {
      const int others = static_cast<int>(head.size() + percent.size() + tail.size()) + 4;
      width = std::min(kMaxBarWidth, max_columns - others);
    }
    if (width >= kMinBarWidth) {
      absl::StrAppend(&line, " ", FormatBar(state.step, state.total, width));
    }
    absl::StrAppend(&line, " ", percent);
  }
  line += tail;
  if (max_columns > 0 && static_cast<int>(line.size()) > max_columns) line.resize(max_columns);
  return line;
}

void StepRateEstimator::Add(int64_t step, absl::Time time) {
  if (!points_.empty() && (step <= points_.back().first || time < points_.back().second)) {
    points_.clear();
  }
  points_.emplace_back(step, time);
  while (points_.size() > window_) points_.pop_front();
}

std::optional<double> StepRateEstimator::SecondsPerStep() const {
  if (points_.size() < 2) return std::nullopt;
  const double seconds = absl::ToDoubleSeconds(points_.back().second - points_.front().second);
  const int64_t steps = points_.back().first - points_.front().first;
  if (seconds <= 0 || steps <= 0) return std::nullopt;
  return seconds / static_cast<double>(steps);
}

}  // namespace dstrain::cli
