#include "worker/engine/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace dstrain::engine {
namespace {

using nlohmann::json;

// The formulas below repeat DeepSpeed's floating-point operations in the same order, so that a
// schedule gives bit-identical learning rates on the same libm.

// No scheduler: the optimizer keeps the lr it was built with.
class ConstantLr final : public LrSchedule {
 public:
  explicit ConstantLr(double lr) : lr_(lr) {}
  double LrAtIteration(int64_t) const override { return lr_; }
  std::string type() const override { return ""; }

 private:
  double lr_;
};

// Shared by WarmupLR, WarmupDecayLR and WarmupCosineLR: the warmup fraction gamma in [0, 1) for
// t < N (N = max(2, warmup_num_steps), as DeepSpeed clamps it):
//   log:    gamma = (1 / ln N) * ln(t + 1)
//   linear: gamma = t / N
struct Warmup {
  int64_t steps = 2;  // N, already max(2, n)
  bool linear = false;
  double inverse_log = 0.0;  // 1 / ln N, precomputed as DeepSpeed does

  Warmup(int64_t n, const std::string& type)
      : steps(std::max<int64_t>(2, n)),
        linear(type == "linear"),
        inverse_log(1.0 / std::log(static_cast<double>(steps))) {}

  double Gamma(int64_t t) const {
    if (linear) return static_cast<double>(t) / static_cast<double>(steps);
    return inverse_log * std::log(static_cast<double>(t + 1));
  }
};

// WarmupLR: lr = min + (max - min) * gamma, gamma from Warmup for t < N, then 1.
// WarmupDecayLR: after warmup gamma = max(0, (T - t) / max(1, T - N)), a linear decay that
// reaches 0 at t = T and stays there. Before the first step (t = -1) both give warmup_min_lr.
class WarmupLr final : public LrSchedule {
 public:
  WarmupLr(const json& p, bool decay)
      : decay_(decay),
        min_lr_(p["warmup_min_lr"].get<double>()),
        delta_lr_(p["warmup_max_lr"].get<double>() - min_lr_),
        warmup_(p["warmup_num_steps"].get<int64_t>(), p["warmup_type"].get<std::string>()),
        total_(decay ? p["total_num_steps"].get<int64_t>() : 0) {}

  double LrAtIteration(int64_t t) const override {
    if (t < 0) return min_lr_;
    return min_lr_ + delta_lr_ * Gamma(t);
  }
  std::string type() const override { return decay_ ? "WarmupDecayLR" : "WarmupLR"; }

 private:
  double Gamma(int64_t t) const {
    if (t < warmup_.steps) return warmup_.Gamma(t);
    if (!decay_) return 1.0;
    const double remaining = static_cast<double>(total_ - t);
    const double span = std::max(1.0, static_cast<double>(total_ - warmup_.steps));
    return std::max(0.0, remaining / span);
  }

  bool decay_;
  double min_lr_;
  double delta_lr_;
  Warmup warmup_;
  int64_t total_;
};

// WarmupCosineLR: lr = optimizer lr * ratio.
//   t < N:  ratio = wmin + gamma * (1 - wmin)
//   t >= N: ratio = max(0, cmin + (1 - cmin) * (1 + cos(pi * (t - N + 1) / (T - N))) / 2)
// ratio reaches cmin at t = T - 1. Like DeepSpeed at the reference commit the cosine argument is
// not clamped, so past t = T - 1 the ratio rises again (later DeepSpeed clamps it; the config
// notes when job.train_steps runs past total_num_steps). At t = -1 DeepSpeed sets lr 0.
class WarmupCosineLr final : public LrSchedule {
 public:
  WarmupCosineLr(const json& p, double base_lr)
      : base_lr_(base_lr),
        warmup_min_ratio_(p["warmup_min_ratio"].get<double>()),
        cos_min_ratio_(p["cos_min_ratio"].get<double>()),
        warmup_(p["warmup_num_steps"].get<int64_t>(), p["warmup_type"].get<std::string>()),
        total_(p["total_num_steps"].get<int64_t>()) {}

  double LrAtIteration(int64_t t) const override {
    if (t < 0) return 0.0;
    return base_lr_ * Ratio(t);
  }
  std::string type() const override { return "WarmupCosineLR"; }

 private:
  double Ratio(int64_t t) const {
    if (t < warmup_.steps) {
      const double gamma = warmup_.Gamma(t);
      return warmup_min_ratio_ + gamma * (1.0 - warmup_min_ratio_);
    }
    const double real_last_step = static_cast<double>(t - warmup_.steps + 1);
    const double real_total_steps = static_cast<double>(total_ - warmup_.steps);
    const double cosine = (1.0 + std::cos(M_PI * real_last_step / real_total_steps)) / 2.0;
    return std::max(0.0, cos_min_ratio_ + (1.0 - cos_min_ratio_) * cosine);
  }

  double base_lr_;
  double warmup_min_ratio_;
  double cos_min_ratio_;
  Warmup warmup_;
  int64_t total_;
};

// OneCycle (1cycle policy, Smith 2018). A cycle of S = S1 + S2 iterations (first and second
// step sizes), then a decay phase. With b = t + 1 and r = S1 / S:
//   cycle = floor(1 + b / S), x = 1 + b / S - cycle
//   scale = x / r            if x <= r   (lr rising from min to max over S1 iterations)
//         = (x - 1) / (r - 1) otherwise (falling back to min over S2)
//   lr = min_lr + (max_lr - min_lr) * scale,  beta1 = max_mom - (max_mom - min_mom) * scale
// With a stair count c > 0 for the current half, the scale is quantised to c flat stairs:
// scale = floor(position) / c, position = (b mod S) * c / S1 on the way up and
// (S - b mod S) * c / S2 on the way down.
// For t >= S, with i = t - S + 1 decay iterations:
//   lr = min_lr / (1 + decay_lr_rate * i / decay_step_size)          (min_lr when no decay)
//   beta1 = max_mom * (1 + decay_mom_rate * i / decay_step_size)    (max_mom when no decay)
// "No decay" is decay_step_size == 0 or the rate == 0. At t = -1 DeepSpeed sets lr = min_lr and
// betas = (min_mom, 0.99); with cycle_momentum beta2 is always 0.99.
class OneCycleLr final : public LrSchedule {
 public:
  explicit OneCycleLr(const json& p)
      : min_lr_(p["cycle_min_lr"].get<double>()),
        max_lr_(p["cycle_max_lr"].get<double>()),
        decay_lr_rate_(p["decay_lr_rate"].get<double>()),
        first_step_size_(static_cast<double>(p["cycle_first_step_size"].get<int64_t>())),
        second_step_size_(static_cast<double>(p["cycle_second_step_size"].get<int64_t>())),
        total_size_(first_step_size_ + second_step_size_),
        step_ratio_(first_step_size_ / total_size_),
        first_stair_count_(p["cycle_first_stair_count"].get<int64_t>()),
        second_stair_count_(p["cycle_second_stair_count"].get<int64_t>()),
        decay_step_size_(p["decay_step_size"].get<int64_t>()),
        cycle_momentum_(p["cycle_momentum"].get<bool>()),
        min_mom_(p["cycle_min_mom"].get<double>()),
        max_mom_(p["cycle_max_mom"].get<double>()),
        decay_mom_rate_(p["decay_mom_rate"].get<double>()),
        skip_lr_decay_(decay_step_size_ == 0 || decay_lr_rate_ == 0.0),
        skip_mom_decay_(decay_step_size_ == 0 || decay_mom_rate_ == 0.0) {}

  double LrAtIteration(int64_t t) const override {
    if (t < 0) return min_lr_;
    if (static_cast<double>(t) < total_size_) {
      return min_lr_ + (max_lr_ - min_lr_) * ScaleFactor(t);
    }
    if (skip_lr_decay_) return min_lr_;
    return min_lr_ / (1.0 + decay_lr_rate_ * DecayInterval(t));
  }

  std::optional<double> Beta1AtIteration(int64_t t) const override {
    if (!cycle_momentum_) return std::nullopt;
    if (t < 0) return min_mom_;
    if (static_cast<double>(t) < total_size_) {
      return max_mom_ - (max_mom_ - min_mom_) * ScaleFactor(t);
    }
    if (skip_mom_decay_) return max_mom_;
    return max_mom_ * (1.0 + decay_mom_rate_ * DecayInterval(t));
  }

  std::optional<double> Beta2AtIteration(int64_t) const override {
    if (!cycle_momentum_) return std::nullopt;
    return kBeta2;
  }

  std::string type() const override { return "OneCycle"; }

 private:
  static constexpr double kBeta2 = 0.99;  // DeepSpeed pairs every cycled beta1 with 0.99

  double ScaleFactor(int64_t t) const {
    const int64_t batch_iteration = t + 1;
    const double b = static_cast<double>(batch_iteration);
    const double cycle = std::floor(1.0 + b / total_size_);
    const double x = 1.0 + b / total_size_ - cycle;
    double scale;
    int64_t stair_count;
    if (x <= step_ratio_) {
      scale = x / step_ratio_;
      stair_count = first_stair_count_;
    } else {
      scale = (x - 1.0) / (step_ratio_ - 1.0);
      stair_count = second_stair_count_;
    }
    if (stair_count > 0) {
      // From the integer position in the cycle, not from `scale`: at a half-cycle boundary the
      // float scale can land just below a whole stair and would lose it.
      const double cycle_iteration = std::fmod(b, total_size_);
      const double c = static_cast<double>(stair_count);
      const double position = cycle_iteration <= first_step_size_
                                  ? cycle_iteration * c / first_step_size_
                                  : (total_size_ - cycle_iteration) * c / second_step_size_;
      scale = std::floor(position) / c;
    }
    return scale;
  }

  double DecayInterval(int64_t t) const {
    const double decay_batch_iteration = static_cast<double>(t) - total_size_ + 1.0;
    return decay_batch_iteration / static_cast<double>(decay_step_size_);
  }

  double min_lr_, max_lr_, decay_lr_rate_;
  double first_step_size_, second_step_size_, total_size_, step_ratio_;
  int64_t first_stair_count_, second_stair_count_, decay_step_size_;
  bool cycle_momentum_;
  double min_mom_, max_mom_, decay_mom_rate_;
  bool skip_lr_decay_, skip_mom_decay_;
};

// LRRangeTest: lr = min_lr * (1 + step_rate * interval), interval = (t + 1) / step_size
// (floored with staircase). At t = -1 DeepSpeed sets min_lr.
class LrRangeTest final : public LrSchedule {
 public:
  explicit LrRangeTest(const json& p)
      : min_lr_(p["lr_range_test_min_lr"].get<double>()),
        step_size_(static_cast<double>(p["lr_range_test_step_size"].get<int64_t>())),
        step_rate_(p["lr_range_test_step_rate"].get<double>()),
        staircase_(p["lr_range_test_staircase"].get<bool>()) {}

  double LrAtIteration(int64_t t) const override {
    if (t < 0) return min_lr_;
    double interval = static_cast<double>(t + 1) / step_size_;
    if (staircase_) interval = std::floor(interval);
    return min_lr_ * (1.0 + step_rate_ * interval);
  }
  std::string type() const override { return "LRRangeTest"; }

 private:
  double min_lr_, step_size_, step_rate_;
  bool staircase_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LrSchedule>> LrSchedule::Create(
    const config::SchedulerConfig& scheduler, const config::OptimizerConfig& optimizer) {
  DT_ASSIGN_OR_RETURN(config::SchedulerConfig s,
                      config::ResolveSchedulerConfig(scheduler.type, scheduler.params));
  const json& p = s.params;
  if (s.type.empty()) return std::make_unique<ConstantLr>(optimizer.lr);
  if (s.type == "WarmupLR") return std::make_unique<WarmupLr>(p, /*decay=*/false);
  if (s.type == "WarmupDecayLR") return std::make_unique<WarmupLr>(p, /*decay=*/true);
  if (s.type == "WarmupCosineLR") return std::make_unique<WarmupCosineLr>(p, optimizer.lr);
  if (s.type == "OneCycle") return std::make_unique<OneCycleLr>(p);
  if (s.type == "LRRangeTest") return std::make_unique<LrRangeTest>(p);
  // ResolveSchedulerConfig rejects every other type.
  return absl::InternalError(absl::StrCat("scheduler.type: no schedule for \"", s.type, "\""));
}

double LrSchedule::Lr(int64_t step) const { return LrAtIteration(std::max<int64_t>(step, 0) - 1); }

std::optional<double> LrSchedule::Beta1(int64_t step) const {
  return Beta1AtIteration(std::max<int64_t>(step, 0) - 1);
}

std::optional<double> LrSchedule::Beta2(int64_t step) const {
  return Beta2AtIteration(std::max<int64_t>(step, 0) - 1);
}

}  // namespace dstrain::engine
