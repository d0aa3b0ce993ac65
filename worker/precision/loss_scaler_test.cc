#include "worker/precision/loss_scaler.h"

#include <cmath>
#include <vector>

#include "common/random/rng.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"

namespace dstrain::precision {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

struct Expect {
  bool overflow;
  double scale;  // after the update
  int hysteresis;
};

void Replay(LossScaler& s, const std::vector<Expect>& trace) {
  for (size_t i = 0; i < trace.size(); ++i) {
    ASSERT_THAT(s.Update(trace[i].overflow), IsOk()) << "iteration " << i;
    EXPECT_EQ(s.scale(), trace[i].scale) << "iteration " << i;
    EXPECT_EQ(s.hysteresis_left(), trace[i].hysteresis) << "iteration " << i;
  }
}

LossScalerOptions Dynamic(double init, int64_t window, int hysteresis, bool consecutive,
                          double min_scale) {
  LossScalerOptions o;
  o.initial_scale = init;
  o.window = window;
  o.hysteresis = hysteresis;
  o.consecutive_hysteresis = consecutive;
  o.min_scale = min_scale;
  return o;
}

// DeepSpeed's scaler trace (docs/configuration.md, "The dynamic loss scaler (fp16)"): growth
// after the window, the hysteresis countdown, and
// the refill that happens only when the scale grows.
TEST(LossScaler, GoldenTraceGrowthAndHysteresis) {
  LossScaler s(Dynamic(65536, 4, 2, false, 1));
  const bool O = true, C = false;
  Replay(s, {{O, 65536, 1},
             {O, 32768, 1},
             {C, 32768, 1},
             {C, 32768, 1},
             {C, 32768, 1},
             {C, 65536, 2},
             {O, 65536, 1},
             {C, 65536, 1},
             {O, 32768, 1},
             {C, 32768, 1},
             {C, 32768, 1},
             {C, 32768, 1},
             {C, 65536, 2}});
  EXPECT_EQ(s.overflows(), 4);
}

TEST(LossScaler, FirstGrowthIsAtTheWindowthStepWithoutOverflow) {
  LossScaler s(Dynamic(8, 3, 2, false, 1));
  Replay(s, {{false, 8, 2},
             {false, 8, 2},
             {false, 16, 2},
             {false, 16, 2},
             {false, 16, 2},
             {false, 32, 2}});
}

TEST(LossScaler, ConsecutiveHysteresisRefillsOnEveryCleanStep) {
  LossScaler s(Dynamic(65536, 4, 2, true, 1));
  Replay(s, {{true, 65536, 1},
             {false, 65536, 2},
             {true, 65536, 1},
             {true, 32768, 1},
             {false, 32768, 2},
             {true, 32768, 1},
             {false, 32768, 2},
             {false, 32768, 2},
             {false, 32768, 2},
             {false, 65536, 2}});  // 4 clean steps after the overflow at 5
}

TEST(LossScaler, FloorHoldsThenOverflowAtTheFloorFails) {
  LossScaler s(Dynamic(16, 1000, 1, false, 5));
  Replay(s, {{true, 8, 1}, {true, 5, 1}});  // halving stops at min_scale
  const LossScaler::State before = s.state();
  EXPECT_THAT(s.Update(true), StatusIs(absl::StatusCode::kFailedPrecondition,
                                       HasSubstr("loss scale already at its minimum (5")));
  EXPECT_EQ(s.state().cur_scale, before.cur_scale);
  EXPECT_EQ(s.state().cur_iter, before.cur_iter);
  // With hysteresis left, an overflow at the floor only spends it.
  LossScaler h(Dynamic(2, 1000, 3, false, 2));
  Replay(h, {{true, 2, 2}, {true, 2, 1}});
  EXPECT_FALSE(h.Update(true).ok());
}

TEST(LossScaler, StaticScaleNeverMoves) {
  config::Fp16Config fp16;
  fp16.enabled = true;
  fp16.loss_scale = 128;
  LossScaler s(LossScalerOptions::FromConfig(fp16));
  for (int i = 0; i < 50; ++i) {
    ASSERT_THAT(s.Update(i % 3 == 0), IsOk());
    ASSERT_EQ(s.scale(), 128);
  }
  EXPECT_EQ(s.overflows(), 17);
}

// The block's values reach the scaler (the config layer has already applied DeepSpeed's
// 2^32 / hysteresis 1 quirk when no dynamic key was given: config_test Fp16EnabledAlone).
TEST(LossScaler, OptionsFromTheFp16Block) {
  config::Fp16Config fp16;
  fp16.enabled = true;
  fp16.initial_scale_power = 12;
  fp16.hysteresis = 3;
  fp16.loss_scale_window = 50;
  fp16.min_loss_scale = 0.25;
  fp16.consecutive_hysteresis = true;
  const LossScalerOptions o = LossScalerOptions::FromConfig(fp16);
  EXPECT_TRUE(o.dynamic);
  EXPECT_EQ(o.initial_scale, 4096);
  EXPECT_EQ(o.hysteresis, 3);
  EXPECT_EQ(o.window, 50);
  EXPECT_EQ(o.min_scale, 0.25);
  EXPECT_TRUE(o.consecutive_hysteresis);
}

// DeepSpeed's update_scale written out again, independently, as the Python reads.
struct PyScaler {
  double cur_scale;
  int64_t cur_iter = 0, last_overflow_iter = -1;
  int scale_window, delayed_shift, cur_hysteresis;
  bool consecutive_hysteresis;
  double min_scale;
  bool raised = false;
  void update_scale(bool overflow) {
    if (overflow) {
      if (delayed_shift == 1 || cur_hysteresis == 1) {
        if (cur_scale == min_scale) {
          raised = true;
          return;
        }
        cur_scale = std::max(cur_scale / 2.0, min_scale);
      } else {
        cur_hysteresis -= 1;
      }
      last_overflow_iter = cur_iter;
    } else {
      if (consecutive_hysteresis) cur_hysteresis = delayed_shift;
      if ((cur_iter - last_overflow_iter) % scale_window == 0) {
        if (!consecutive_hysteresis) cur_hysteresis = delayed_shift;
        cur_scale *= 2.0;
      }
    }
    cur_iter += 1;
  }
};

TEST(LossScaler, MatchesTheReferenceOnRandomOverflowPatterns) {
  Rng rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t window = 1 + rng.Below(20);
    const int hysteresis = 1 + static_cast<int>(rng.Below(4));
    const bool consecutive = rng.Below(2) == 1;
    const double min_scale = std::ldexp(1.0, static_cast<int>(rng.Below(4)));
    const double init = std::ldexp(1.0, 4 + static_cast<int>(rng.Below(8)));
    const double p_overflow = 0.05 + 0.5 * (rng.Below(100) / 100.0);
    LossScaler ours(Dynamic(init, window, hysteresis, consecutive, min_scale));
    PyScaler ref{init,       0,          -1,          static_cast<int>(window),
                 hysteresis, hysteresis, consecutive, min_scale};
    for (int i = 0; i < 500; ++i) {
      const bool overflow = rng.Below(1000) < p_overflow * 1000;
      const absl::Status st = ours.Update(overflow);
      ref.update_scale(overflow);
      ASSERT_EQ(!st.ok(), ref.raised) << "trial " << trial << " step " << i;
      if (ref.raised) break;
      ASSERT_EQ(ours.scale(), ref.cur_scale) << "trial " << trial << " step " << i;
      ASSERT_EQ(ours.hysteresis_left(), ref.cur_hysteresis) << "trial " << trial << " step " << i;
    }
  }
}

TEST(LossScaler, StateRoundTrips) {
  LossScaler a(Dynamic(1024, 3, 2, false, 1));
  for (bool o : {true, false, true, true, false, false}) ASSERT_THAT(a.Update(o), IsOk());
  LossScaler b(Dynamic(1024, 3, 2, false, 1));
  b.Restore(a.state());
  for (bool o : {false, true, false, false, false, true}) {
    ASSERT_THAT(a.Update(o), IsOk());
    ASSERT_THAT(b.Update(o), IsOk());
    ASSERT_EQ(a.scale(), b.scale());
    ASSERT_EQ(a.hysteresis_left(), b.hysteresis_left());
  }
}

}  // namespace
}  // namespace dstrain::precision
