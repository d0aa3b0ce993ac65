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

std::string FormatSparkline(const std::vector<double>& values) {
  static constexpr const char* kBlocks[8] = {"\u2581", "\u2582", "\u2583", "\u2584",
                                             "\u2585", "\u2586", "\u2587", "\u2588"};
  double lo = INFINITY, hi = -INFINITY;
  for (double v : values) {
    if (!std::isfinite(v)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  std::string out;
  for (double v : values) {
    if (!std::isfinite(v)) {
      out.push_back('!');
      continue;
    }
    const int level = hi > lo ? static_cast<int>(std::lround((v - lo) / (hi - lo) * 7)) : 0;
    out += kBlocks[std::clamp(level, 0, 7)];
  }
  return out;
}

namespace {

// Terminal columns of UTF-8 text: its bytes less continuation bytes (every character here is one
// column wide).
int Columns(const std::string& text) {
  int n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

// Cuts UTF-8 text to `columns` columns without splitting a character.
void CutToColumns(std::string* text, int columns) {
  int n = 0;
  for (size_t i = 0; i < text->size(); ++i) {
    if ((static_cast<unsigned char>((*text)[i]) & 0xC0) == 0x80) continue;
    if (n == columns) {
      text->resize(i);
      return;
    }
    ++n;
  }
}

}  // namespace

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
  std::string tail, rest;
  if (state.loss) absl::StrAppend(&tail, " loss ", absl::StrFormat("%.4g", *state.loss));
  if (state.tokens_per_second && std::isfinite(*state.tokens_per_second)) {
    absl::StrAppend(&rest, " ", FormatThousands(std::llround(*state.tokens_per_second)), " tok/s");
  }
  if (known_total && state.seconds_per_step && std::isfinite(*state.seconds_per_step) &&
      *state.seconds_per_step >= 0) {
    const int64_t left = std::max<int64_t>(state.total - state.step, 0);
    absl::StrAppend(&rest, " ETA ",
                    FormatEta(absl::Seconds(static_cast<double>(left) * *state.seconds_per_step)));
  }
  // The sparkline, when it fits beside the widest bar.
  const size_t first = state.loss_history.size() > static_cast<size_t>(kSparklineCells)
                           ? state.loss_history.size() - kSparklineCells
                           : 0;
  const std::string spark =
      state.loss_history.size() >= 2
          ? absl::StrCat(" ", FormatSparkline(std::vector<double>(
                                  state.loss_history.begin() + first, state.loss_history.end())))
          : "";
  const int without_spark =
      static_cast<int>(head.size() + percent.size() + tail.size() + rest.size()) +
      (known_total ? kMaxBarWidth + 4 : 0);
  if (!spark.empty() && (max_columns <= 0 || without_spark + Columns(spark) <= max_columns)) {
    tail += spark;
  }
  tail += rest;

  std::string line = head;
  if (known_total) {
    // "step S/T [bar] P%": the bar gets what the bound leaves, within [kMinBarWidth, kMaxBarWidth].
    int width = kMaxBarWidth;
    if (max_columns > 0) {
      const int others = static_cast<int>(head.size() + percent.size()) + Columns(tail) + 4;
      width = std::min(kMaxBarWidth, max_columns - others);
    }
    if (width >= kMinBarWidth) {
      absl::StrAppend(&line, " ", FormatBar(state.step, state.total, width));
    }
    absl::StrAppend(&line, " ", percent);
  }
  line += tail;
  if (max_columns > 0 && Columns(line) > max_columns) CutToColumns(&line, max_columns);
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
