// DeepSpeed's dynamic loss scaler, ZeRO path (fp16/loss_scaler.py DynamicLossScaler), with one
// deliberate change: an overflow at the minimum scale fails the job with a clear error instead
// of skipping forever (DeepSpeed raises there too, but only on its ZeRO path and with a message
// users find cryptic; its non-ZeRO path loops "reducing to 1" forever, issue #697).
//
// Per optimizer step: the gradients are checked for inf/NaN (on every rank, agreed across the
// data-parallel group); Update(overflow) then
//   overflow: with hysteresis left (> 1) spend one and keep the scale; otherwise halve the scale
//             (not below min_scale) — or, already at min_scale, fail. The step is skipped.
//   clean:    with consecutive_hysteresis refill the hysteresis; every `window` steps since the
//             last overflow double the scale (and, without consecutive_hysteresis, refill the
//             hysteresis only then).
// A static scale (fp16.loss_scale > 0) never changes; an overflow still skips the step.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "worker/config/config.h"

namespace dstrain::precision {

struct LossScalerOptions {
  bool dynamic = true;
  double initial_scale = 65536.0;
  int64_t window = 1000;
  int hysteresis = 2;  // DeepSpeed's delayed_shift
  bool consecutive_hysteresis = false;
  double min_scale = 1.0;

  // From the fp16 block. DeepSpeed's ZeRO-path quirk (without any dynamic key the scaler starts
  // at 2^32 with hysteresis 1; docs/configuration.md) is applied by the config layer,
  // which writes those values into the block.
  static LossScalerOptions FromConfig(const config::Fp16Config& fp16);
  // bf16 and fp32: a static scale of 1.
  static LossScalerOptions Static(double scale);
};

class LossScaler {
 public:
  explicit LossScaler(const LossScalerOptions& options);

  double scale() const { return cur_scale_; }
  int hysteresis_left() const { return cur_hysteresis_; }
  int64_t iterations() const { return cur_iter_; }
  int64_t overflows() const { return overflows_; }

  // Records one optimizer step's outcome. Returns kFailedPrecondition when `overflow` happens
  // with the scale already at its minimum and no hysteresis left (the state is then unchanged).
  absl::Status Update(bool overflow);

  // Checkpointed state.
  struct State {
    double cur_scale = 0;
    int64_t cur_iter = 0, last_overflow_iter = -1, overflows = 0;
    int cur_hysteresis = 0;
  };
  State state() const;
  void Restore(const State& s);

 private:
  LossScalerOptions options_;
  double cur_scale_;
  int64_t cur_iter_ = 0;
  int64_t last_overflow_iter_ = -1;
  int cur_hysteresis_;
  int64_t overflows_ = 0;
};

}  // namespace dstrain::precision
