// Learning-rate schedules with DeepSpeed's semantics (deepspeed/runtime/lr_schedules.py;
// docs/configuration.md, "Learning-rate schedules"): WarmupLR, WarmupDecayLR, WarmupCosineLR,
// OneCycle (with its inverse momentum cycle) and LRRangeTest, plus the constant optimizer lr when a
// job has no scheduler.
//
// Step convention. DeepSpeed's schedulers keep one number, last_batch_iteration (t), which
// starts at -1. The constructor writes get_lr() at t = -1 into the optimizer; after every
// *applied* optimizer step (an fp16-overflow step is skipped and does not count) the engine calls
// scheduler.step(), which increments t and writes get_lr() at the new t. So the k-th applied
// optimizer step (k = 0 for the first) runs with the lr computed at t = k - 1:
//
//   Lr(k) = LrAtIteration(k - 1)
//
// and LrAtIteration(-1) is what the constructor sets: warmup_min_lr for WarmupLR/WarmupDecayLR,
// 0 for WarmupCosineLR, cycle_min_lr for OneCycle, lr_range_test_min_lr for LRRangeTest
// (DeepSpeed PR #6597, October 2024, made every scheduler initialise the optimizer's lr; the
// reference commit 38327e07 of February 2025 includes it). A checkpoint's `last_batch_iteration` is
// therefore k - 1 when k steps have been applied, and resuming needs no state beyond k.
//
// Pure functions of the step: no state, safe to call from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "worker/config/config.h"

namespace dstrain::engine {

class LrSchedule {
 public:
  // Builds the schedule of `scheduler` (validated and defaulted with
  // config::ResolveSchedulerConfig, so a hand-built config gets DeepSpeed's defaults too);
  // `optimizer.lr` is the constant lr without a scheduler and WarmupCosineLR's base lr.
  // kInvalidArgument for an unknown type or invalid parameters.
  static absl::StatusOr<std::unique_ptr<LrSchedule>> Create(
      const config::SchedulerConfig& scheduler, const config::OptimizerConfig& optimizer);

  virtual ~LrSchedule() = default;

  // Learning rate of the optimizer step that follows `step` applied steps (0 = the first step).
  // REQUIRES: step >= 0 (negative values are treated as 0).
  double Lr(int64_t step) const;

  // Adam's beta1 / beta2 for that step when the schedule sets them (OneCycle with
  // cycle_momentum: beta1 cycles inversely to the lr, beta2 is DeepSpeed's fixed 0.99);
  // std::nullopt means "use the optimizer's betas".
  std::optional<double> Beta1(int64_t step) const;
  std::optional<double> Beta2(int64_t step) const;

  // What DeepSpeed's scheduler writes into the optimizer when last_batch_iteration ==
  // `last_batch_iteration` (-1 = at construction). REQUIRES: last_batch_iteration >= -1.
  virtual double LrAtIteration(int64_t last_batch_iteration) const = 0;
  virtual std::optional<double> Beta1AtIteration(int64_t /*last_batch_iteration*/) const {
    return std::nullopt;
  }
  virtual std::optional<double> Beta2AtIteration(int64_t /*last_batch_iteration*/) const {
    return std::nullopt;
  }

  // The DeepSpeed type name ("WarmupLR", ...), or "" for the constant optimizer lr.
  virtual std::string type() const = 0;
};

}  // namespace dstrain::engine
