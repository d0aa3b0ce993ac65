#include "worker/precision/loss_scaler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace dstrain::precision {

LossScalerOptions LossScalerOptions::FromConfig(const config::Fp16Config& fp16) {
  LossScalerOptions o;
  if (fp16.loss_scale > 0) return Static(fp16.loss_scale);
  o.initial_scale = std::ldexp(1.0, fp16.initial_scale_power);
  o.window = fp16.loss_scale_window;
  o.hysteresis = fp16.hysteresis;
  o.consecutive_hysteresis = fp16.consecutive_hysteresis;
  o.min_scale = fp16.min_loss_scale;
  return o;
}

LossScalerOptions LossScalerOptions::Static(double scale) {
  LossScalerOptions o;
  o.dynamic = false;
  o.initial_scale = scale;
  o.min_scale = scale;
  return o;
}

LossScaler::LossScaler(const LossScalerOptions& options)
    : options_(options), cur_scale_(options.initial_scale), cur_hysteresis_(options.hysteresis) {}

absl::Status LossScaler::Update(bool overflow) {
  if (!options_.dynamic) {
    overflows_ += overflow;
    ++cur_iter_;
    return absl::OkStatus();
  }
  if (overflow) {
    if (options_.hysteresis == 1 || cur_hysteresis_ == 1) {
      if (cur_scale_ <= options_.min_scale) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "fp16 gradients overflowed at step %d with the loss scale already at its minimum "
            "(%g, fp16.min_loss_scale) after %d overflows: the model produces inf/NaN at any "
            "scale. Lower the learning rate, enable gradient_clipping, or train in bf16",
            cur_iter_ + 1, options_.min_scale, overflows_ + 1));
      }
      cur_scale_ = std::max(cur_scale_ / 2, options_.min_scale);
    } else {
      --cur_hysteresis_;
    }
    last_overflow_iter_ = cur_iter_;
    ++overflows_;
  } else {
    if (options_.consecutive_hysteresis) cur_hysteresis_ = options_.hysteresis;
    if ((cur_iter_ - last_overflow_iter_) % options_.window == 0) {
      if (!options_.consecutive_hysteresis) cur_hysteresis_ = options_.hysteresis;
      cur_scale_ *= 2;
    }
  }
  ++cur_iter_;
  return absl::OkStatus();
}

LossScaler::State LossScaler::state() const {
  return {cur_scale_, cur_iter_, last_overflow_iter_, overflows_, cur_hysteresis_};
}

void LossScaler::Restore(const State& s) {
  cur_scale_ = s.cur_scale;
  cur_iter_ = s.cur_iter;
  last_overflow_iter_ = s.last_overflow_iter;
  overflows_ = s.overflows;
  cur_hysteresis_ = s.cur_hysteresis;
}

}  // namespace dstrain::precision
