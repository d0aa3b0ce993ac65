#include "worker/engine/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::engine {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::nlohmann::json;
using ::testing::HasSubstr;

// The reference formulas below are written again from DeepSpeed's lr_schedules.py, in terms of
// t = last_batch_iteration, and the test checks Lr(k) == f(k - 1): the k-th applied optimizer
// step runs with what the scheduler wrote after k - 1 step() calls (t = -1: the constructor).

std::unique_ptr<LrSchedule> Make(const std::string& type, const json& params,
                                 double optimizer_lr = 1e-3) {
  config::SchedulerConfig s;
  s.type = type;
  s.params = params;
  config::OptimizerConfig o;
  o.lr = optimizer_lr;
  absl::StatusOr<std::unique_ptr<LrSchedule>> schedule = LrSchedule::Create(s, o);
  EXPECT_THAT(schedule, IsOk());
  return schedule.ok() ? std::move(*schedule) : nullptr;
}

void ExpectMatches(const LrSchedule& schedule, const std::function<double(int64_t)>& reference,
                   const std::vector<int64_t>& steps) {
  for (int64_t k : steps) {
    const double want = reference(k - 1);
    EXPECT_NEAR(schedule.Lr(k), want, 1e-12 * std::max(1.0, std::fabs(want)))
        << schedule.type() << " step " << k;
  }
}

// WarmupLR / WarmupDecayLR warmup fraction, N = max(2, n).
double WarmupGamma(int64_t t, int64_t n, bool linear) {
  const int64_t N = std::max<int64_t>(2, n);
  return linear ? double(t) / double(N) : std::log(double(t) + 1.0) / std::log(double(N));
}

TEST(LrScheduleTest, NoSchedulerIsConstant) {
  std::unique_ptr<LrSchedule> s = Make("", json::object(), 3e-4);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->type(), "");
  for (int64_t k : {0, 1, 1000, 1000000}) EXPECT_EQ(s->Lr(k), 3e-4);
  EXPECT_EQ(s->Beta1(5), std::nullopt);
  EXPECT_EQ(s->Beta2(5), std::nullopt);
}

TEST(LrScheduleTest, WarmupLrLogMatchesFormula) {
  const double mn = 1e-5, mx = 3e-4;
  const int64_t n = 100;
  std::unique_ptr<LrSchedule> s =
      Make("WarmupLR", {{"warmup_min_lr", mn}, {"warmup_max_lr", mx}, {"warmup_num_steps", n}});
  ASSERT_NE(s, nullptr);
  auto ref = [&](int64_t t) -> double {
    if (t < 0) return mn;  // the constructor writes warmup_min_lr
    const double gamma = t < n ? WarmupGamma(t, n, false) : 1.0;
    return mn + (mx - mn) * gamma;
  };
  ExpectMatches(*s, ref, {0, 1, 2, n - 1, n, n + 1, 50, 5000});
}

TEST(LrScheduleTest, WarmupLrLinearLiterals) {
  std::unique_ptr<LrSchedule> s = Make("WarmupLR", {{"warmup_min_lr", 0.0},
                                                    {"warmup_max_lr", 0.01},
                                                    {"warmup_num_steps", 10},
                                                    {"warmup_type", "linear"}});
  ASSERT_NE(s, nullptr);
  EXPECT_DOUBLE_EQ(s->Lr(0), 0.0);     // constructor: warmup_min_lr
  EXPECT_DOUBLE_EQ(s->Lr(1), 0.0);     // t = 0: gamma 0 / 10
  EXPECT_DOUBLE_EQ(s->Lr(2), 0.001);   // t = 1
  EXPECT_DOUBLE_EQ(s->Lr(6), 0.005);   // t = 5
  EXPECT_DOUBLE_EQ(s->Lr(10), 0.009);  // t = 9, warmup - 1
  EXPECT_DOUBLE_EQ(s->Lr(11), 0.01);   // t = 10: warmup done
  EXPECT_DOUBLE_EQ(s->Lr(100000), 0.01);
}

TEST(LrScheduleTest, WarmupLrDefaultsAndMinimumOfTwoSteps) {
  // Defaults: min 0, max 0.001, 1000 log steps. ln(2)/ln(1000) * 0.001 at t = 1.
  std::unique_ptr<LrSchedule> d = Make("WarmupLR", json::object());
  ASSERT_NE(d, nullptr);
  EXPECT_NEAR(d->Lr(2), 0.001 * 0.10034333188799373, 1e-18);
  EXPECT_DOUBLE_EQ(d->Lr(1001), 0.001);
  // warmup_num_steps 0 acts as 2 (DeepSpeed's max(2, n)): t = 1 -> ln 2 / ln 2 = 1.
  std::unique_ptr<LrSchedule> s =
      Make("WarmupLR", {{"warmup_max_lr", 0.5}, {"warmup_num_steps", 0}});
  ASSERT_NE(s, nullptr);
  EXPECT_DOUBLE_EQ(s->Lr(0), 0.0);
  EXPECT_DOUBLE_EQ(s->Lr(1), 0.0);
  EXPECT_DOUBLE_EQ(s->Lr(2), 0.5);
  EXPECT_DOUBLE_EQ(s->Lr(3), 0.5);
}

TEST(LrScheduleTest, WarmupDecayLrMatchesFormula) {
  const double mn = 0.0, mx = 0.1;
  const int64_t n = 10, total = 110;
  for (const char* type : {"log", "linear"}) {
    const bool linear = std::string(type) == "linear";
    std::unique_ptr<LrSchedule> s = Make("WarmupDecayLR", {{"warmup_min_lr", mn},
                                                           {"warmup_max_lr", mx},
                                                           {"warmup_num_steps", n},
                                                           {"warmup_type", type},
                                                           {"total_num_steps", total}});
    ASSERT_NE(s, nullptr);
    auto ref = [&](int64_t t) -> double {
      if (t < 0) return mn;
      double gamma;
      if (t < n) {
        gamma = WarmupGamma(t, n, linear);
      } else {
        gamma = std::max(0.0, double(total - t) / std::max(1.0, double(total - n)));
      }
      return mn + (mx - mn) * gamma;
    };
    ExpectMatches(*s, ref, {0, 1, 2, n - 1, n, n + 1, 60, total - 1, total, total + 1, 1000});
  }
  std::unique_ptr<LrSchedule> s = Make("WarmupDecayLR", {{"warmup_min_lr", 0.0},
                                                         {"warmup_max_lr", 0.1},
                                                         {"warmup_num_steps", 10},
                                                         {"warmup_type", "linear"},
                                                         {"total_num_steps", 110}});
  ASSERT_NE(s, nullptr);
  EXPECT_DOUBLE_EQ(s->Lr(11), 0.1);   // t = 10: (110 - 10) / 100
  EXPECT_DOUBLE_EQ(s->Lr(61), 0.05);  // t = 60: (110 - 60) / 100
  EXPECT_DOUBLE_EQ(s->Lr(111), 0.0);  // t = 110
  EXPECT_DOUBLE_EQ(s->Lr(500), 0.0);  // clamped at 0
}

TEST(LrScheduleTest, WarmupCosineLrMatchesFormula) {
  const double base = 6e-4, wmin = 0.1, cmin = 0.01;
  const int64_t n = 20, total = 220;
  std::unique_ptr<LrSchedule> s = Make("WarmupCosineLR",
                                       {{"total_num_steps", total},
                                        {"warmup_min_ratio", wmin},
                                        {"warmup_num_steps", n},
                                        {"cos_min_ratio", cmin}},
                                       base);
  ASSERT_NE(s, nullptr);
  auto ref = [&](int64_t t) -> double {
    if (t < 0) return 0.0;  // DeepSpeed's constructor writes lr 0
    double ratio;
    if (t < n) {
      ratio = wmin + WarmupGamma(t, n, false) * (1.0 - wmin);
    } else {
      const double progress = double(t - n + 1) / double(total - n);
      ratio = std::max(0.0, cmin + (1.0 - cmin) * 0.5 * (1.0 + std::cos(M_PI * progress)));
    }
    return base * ratio;
  };
  ExpectMatches(*s, ref, {0, 1, 2, n - 1, n, n + 1, 120, total - 1, total, total + 1, 400});
}

TEST(LrScheduleTest, WarmupCosineLrLiterals) {
  std::unique_ptr<LrSchedule> s = Make("WarmupCosineLR",
                                       {{"total_num_steps", 110},
                                        {"warmup_num_steps", 10},
                                        {"warmup_type", "linear"},
                                        {"cos_min_ratio", 0.0}},
                                       0.01);
  ASSERT_NE(s, nullptr);
  EXPECT_DOUBLE_EQ(s->Lr(0), 0.0);    // constructor
  EXPECT_DOUBLE_EQ(s->Lr(1), 0.0);    // t = 0: ratio 0 (warmup_min_ratio 0)
  EXPECT_DOUBLE_EQ(s->Lr(6), 0.005);  // t = 5: 5 / 10
  EXPECT_DOUBLE_EQ(s->Lr(11), 0.01 * (1 + std::cos(M_PI / 100)) / 2);  // t = 10
  EXPECT_NEAR(s->Lr(60), 0.005, 1e-17);                                // t = 59: cos(pi / 2)
  EXPECT_NEAR(s->Lr(110), 0.0, 1e-17);  // t = 109: cos(pi), the floor
  // Past the end DeepSpeed (reference commit) does not clamp: t = 209 is cos(2 pi).
  EXPECT_NEAR(s->Lr(210), 0.01, 1e-17);
}

TEST(LrScheduleTest, OneCycleMatchesFormula) {
  const double mn = 1e-4, mx = 1e-3, decay_rate = 0.5, min_mom = 0.85, max_mom = 0.95;
  const double mom_rate = 0.01;
  const int64_t s1 = 30, s2 = 50, decay_step = 7;
  std::unique_ptr<LrSchedule> s = Make("OneCycle", {{"cycle_min_lr", mn},
                                                    {"cycle_max_lr", mx},
                                                    {"decay_lr_rate", decay_rate},
                                                    {"cycle_first_step_size", s1},
                                                    {"cycle_second_step_size", s2},
                                                    {"decay_step_size", decay_step},
                                                    {"cycle_min_mom", min_mom},
                                                    {"cycle_max_mom", max_mom},
                                                    {"decay_mom_rate", mom_rate}});
  ASSERT_NE(s, nullptr);
  const double total = double(s1 + s2), ratio = double(s1) / total;
  auto scale = [&](int64_t t) {
    const double b = double(t + 1);
    const double x = 1.0 + b / total - std::floor(1.0 + b / total);
    return x <= ratio ? x / ratio : (x - 1.0) / (ratio - 1.0);
  };
  auto ref_lr = [&](int64_t t) -> double {
    if (t < 0) return mn;
    if (t < s1 + s2) return mn + (mx - mn) * scale(t);
    const double i = double(t - (s1 + s2) + 1);
    return mn / (1.0 + decay_rate * i / double(decay_step));
  };
  auto ref_mom = [&](int64_t t) -> double {
    if (t < 0) return min_mom;  // the constructor writes betas (cycle_min_mom, 0.99)
    if (t < s1 + s2) return max_mom - (max_mom - min_mom) * scale(t);
    const double i = double(t - (s1 + s2) + 1);
    return max_mom * (1.0 + mom_rate * i / double(decay_step));
  };
  const std::vector<int64_t> steps = {0,  1,           2,       s1 - 1,      s1,           s1 + 1,
                                      55, s1 + s2 - 1, s1 + s2, s1 + s2 + 1, s1 + s2 + 100};
  ExpectMatches(*s, ref_lr, steps);
  for (int64_t k : steps) {
    ASSERT_TRUE(s->Beta1(k).has_value());
    EXPECT_NEAR(*s->Beta1(k), ref_mom(k - 1), 1e-12) << "step " << k;
    EXPECT_EQ(s->Beta2(k), 0.99);
  }
}

TEST(LrScheduleTest, OneCycleLiterals) {
  std::unique_ptr<LrSchedule> s = Make("OneCycle", {{"cycle_min_lr", 0.001},
                                                    {"cycle_max_lr", 0.01},
                                                    {"cycle_first_step_size", 10},
                                                    {"decay_step_size", 10},
                                                    {"decay_lr_rate", 1.0},
                                                    {"cycle_min_mom", 0.85},
                                                    {"cycle_max_mom", 0.95}});
  ASSERT_NE(s, nullptr);
  EXPECT_DOUBLE_EQ(s->Lr(0), 0.001);  // constructor
  EXPECT_DOUBLE_EQ(*s->Beta1(0), 0.85);
  EXPECT_DOUBLE_EQ(s->Lr(5), 0.0055);  // t = 4: b = 5, halfway up
  EXPECT_DOUBLE_EQ(*s->Beta1(5), 0.9);
  EXPECT_DOUBLE_EQ(s->Lr(10), 0.01);  // t = 9: b = 10, the peak
  EXPECT_DOUBLE_EQ(*s->Beta1(10), 0.85);
  EXPECT_DOUBLE_EQ(s->Lr(15), 0.0055);   // t = 14: halfway down
  EXPECT_NEAR(s->Lr(20), 0.001, 1e-18);  // t = 19: b = 20, cycle end
  EXPECT_NEAR(*s->Beta1(20), 0.95, 1e-15);
  EXPECT_DOUBLE_EQ(s->Lr(21), 0.001 / 1.1);  // t = 20: first decay iteration
  EXPECT_DOUBLE_EQ(s->Lr(30), 0.001 / 2.0);  // t = 29: i = 10
  EXPECT_DOUBLE_EQ(*s->Beta1(30), 0.95);     // no momentum decay (rate 0)
}

TEST(LrScheduleTest, OneCycleStairs) {
  // Two stairs on the way up (10 iterations), five on the way down (10 iterations).
  std::unique_ptr<LrSchedule> s = Make("OneCycle", {{"cycle_min_lr", 0.0},
                                                    {"cycle_max_lr", 1.0},
                                                    {"cycle_first_step_size", 10},
                                                    {"cycle_first_stair_count", 2},
                                                    {"cycle_second_stair_count", 5},
                                                    {"cycle_momentum", false}});
  ASSERT_NE(s, nullptr);
  EXPECT_DOUBLE_EQ(s->Lr(4), 0.0);       // t = 3: b = 4, position 0.8
  EXPECT_DOUBLE_EQ(s->Lr(5), 0.5);       // b = 5: position 1
  EXPECT_DOUBLE_EQ(s->Lr(9), 0.5);       // b = 9: position 1.8
  EXPECT_DOUBLE_EQ(s->Lr(10), 1.0);      // b = 10: the peak
  EXPECT_DOUBLE_EQ(s->Lr(11), 0.8);      // b = 11: (20 - 11) * 5 / 10 = 4.5 -> 4 / 5
  EXPECT_DOUBLE_EQ(s->Lr(12), 0.8);      // b = 12: 4.0
  EXPECT_DOUBLE_EQ(s->Lr(13), 0.6);      // b = 13: 3.5
  EXPECT_DOUBLE_EQ(s->Lr(20), 0.0);      // b = 20: cycle end
  EXPECT_EQ(s->Beta1(5), std::nullopt);  // cycle_momentum false
  EXPECT_EQ(s->Beta2(5), std::nullopt);
}

TEST(LrScheduleTest, LrRangeTestMatchesFormula) {
  for (bool staircase : {false, true}) {
    const double mn = 1e-4, rate = 2.0;
    const int64_t size = 10;
    std::unique_ptr<LrSchedule> s = Make("LRRangeTest", {{"lr_range_test_min_lr", mn},
                                                         {"lr_range_test_step_size", size},
                                                         {"lr_range_test_step_rate", rate},
                                                         {"lr_range_test_staircase", staircase}});
    ASSERT_NE(s, nullptr);
    auto ref = [&](int64_t t) -> double {
      if (t < 0) return mn;
      double interval = double(t + 1) / double(size);
      if (staircase) interval = std::floor(interval);
      return mn * (1.0 + rate * interval);
    };
    ExpectMatches(*s, ref, {0, 1, 2, size - 1, size, size + 1, 25, 1000});
  }
  std::unique_ptr<LrSchedule> s = Make("LRRangeTest", {{"lr_range_test_step_size", 10}});
  ASSERT_NE(s, nullptr);
  EXPECT_DOUBLE_EQ(s->Lr(0), 0.001);
  EXPECT_DOUBLE_EQ(s->Lr(5), 0.0015);  // t = 4: interval 0.5
  EXPECT_DOUBLE_EQ(s->Lr(10), 0.002);  // t = 9: interval 1
}

TEST(LrScheduleTest, LrAtIterationIsDeepSpeedsIndex) {
  std::unique_ptr<LrSchedule> s = Make(
      "WarmupLR", {{"warmup_max_lr", 0.01}, {"warmup_num_steps", 10}, {"warmup_type", "linear"}});
  ASSERT_NE(s, nullptr);
  for (int64_t k = 0; k < 20; ++k) EXPECT_EQ(s->Lr(k), s->LrAtIteration(k - 1));
  EXPECT_EQ(s->Lr(-5), s->Lr(0));
}

TEST(LrScheduleTest, CreateRejectsBadConfigs) {
  config::OptimizerConfig o;
  config::SchedulerConfig unknown{"Cosine", json::object()};
  EXPECT_THAT(LrSchedule::Create(unknown, o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("scheduler.type: unknown scheduler type \"Cosine\"")));
  config::SchedulerConfig missing{"WarmupCosineLR", json::object()};
  EXPECT_THAT(LrSchedule::Create(missing, o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("scheduler.params.total_num_steps: required")));
  config::SchedulerConfig bad_type{"WarmupLR", {{"warmup_num_steps", "ten"}}};
  EXPECT_THAT(LrSchedule::Create(bad_type, o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("scheduler.params.warmup_num_steps: expected an integer")));
}

TEST(LrScheduleTest, FromParsedJobSpec) {
  absl::StatusOr<config::JobSpec> spec = config::ParseJobSpec(R"({
    "train_batch_size": 8,
    "optimizer": {"type": "AdamW", "params": {"lr": 6e-4}},
    "scheduler": {"type": "WarmupCosineLR",
                  "params": {"total_num_steps": 100, "warmup_num_steps": 10,
                             "warmup_type": "linear"}},
    "model": {"n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 256, "block_size": 8},
    "data": {"train": "x.bin"},
    "job": {"train_steps": 100}
  })",
                                                              "");
  ASSERT_THAT(spec, IsOk());
  absl::StatusOr<std::unique_ptr<LrSchedule>> s =
      LrSchedule::Create(spec->scheduler, spec->optimizer);
  ASSERT_THAT(s, IsOk());
  EXPECT_EQ((*s)->type(), "WarmupCosineLR");
  EXPECT_DOUBLE_EQ((*s)->Lr(6), 6e-4 * 0.5);  // t = 5 of 10 linear warmup steps
  // t = 10, the first cosine step; cos_min_ratio defaults to 1e-4.
  EXPECT_DOUBLE_EQ((*s)->Lr(11), 6e-4 * (1e-4 + (1 - 1e-4) * (1 + std::cos(M_PI / 90)) / 2));
}

}  // namespace
}  // namespace dstrain::engine
