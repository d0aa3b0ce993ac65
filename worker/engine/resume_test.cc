// Resume: K steps, save every rank's state, new engines, load, K more steps — bitwise the losses
// and weights of the uninterrupted run, for ZeRO stages 0-3 x fp32 / bf16 / fp16 x world 1 and 2
// (ranks as threads). Gradient accumulation and clipping are on, and fp16's scaler moves (its
// window is short), so every piece of state must come back.
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"
#include "worker/model/gpt.h"

namespace dstrain::engine {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using testing::Batch;
using testing::RunOnRanks;
using testing::SmallGptSpec;

struct Result {
  std::vector<double> losses, scales;
  std::vector<float> params;
};

// Steps [first, last) on every rank, from a fresh engine or one restored from `states`; with
// `save`, the states after the last step.
std::vector<Result> TrainSteps(const config::JobSpec& spec, int world, int first, int last,
                               const std::vector<std::string>* states,
                               std::vector<std::string>* save) {
  std::vector<Result> out(world);
  if (save != nullptr) save->assign(world, "");
  RunOnRanks(world, [&](int r, comm::Communicator* comm) {
    testing::CpuDevice alloc;
    auto e =
        Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), &alloc.ops), spec, comm);
    ASSERT_THAT(e, IsOk());
    if (states != nullptr) {
      ASSERT_THAT((*e)->LoadState((*states)[r]), IsOk());
    }
    for (int step = first; step < last; ++step) {
      for (int m = 0; m < spec.gradient_accumulation_steps; ++m) {
        const auto [x, y] = Batch(spec, step, r, m);
        ASSERT_THAT((*e)->Forward(x.data(), y.data()), IsOk());
        ASSERT_THAT((*e)->Backward(), IsOk());
        auto st = (*e)->Step();
        ASSERT_THAT(st, IsOk());
        if (st->has_value()) {
          out[r].losses.push_back((**st).loss);
          out[r].scales.push_back((**st).loss_scale);
        }
      }
    }
    EXPECT_EQ((*e)->global_steps(), last);
    if (save != nullptr) {
      auto s = (*e)->SaveState();
      ASSERT_THAT(s, IsOk());
      (*save)[r] = *std::move(s);
    }
    auto params = (*e)->GatherParams();
    ASSERT_THAT(params, IsOk());
    out[r].params = *std::move(params);
  });
  return out;
}

class ResumeTest : public ::testing::TestWithParam<std::tuple<int, int, const char*>> {};

TEST_P(ResumeTest, BitwiseEqualToAnUninterruptedRun) {
  const auto [world, stage, precision] = GetParam();
  const config::JobSpec spec = SmallGptSpec(
      world, stage, /*gas=*/2, /*clip=*/0.5,
      R"(, "reduce_bucket_size": 3000, "stage3_param_persistence_threshold": 100)", 12, precision);
  const std::vector<Result> whole = TrainSteps(spec, world, 0, 12, nullptr, nullptr);
  std::vector<std::string> states;
  const std::vector<Result> before = TrainSteps(spec, world, 0, 6, nullptr, &states);
  const std::vector<Result> after = TrainSteps(spec, world, 6, 12, &states, nullptr);
  for (int r = 0; r < world; ++r) {
    SCOPED_TRACE(absl::StrCat("rank ", r));
    std::vector<double> losses = before[r].losses, scales = before[r].scales;
    losses.insert(losses.end(), after[r].losses.begin(), after[r].losses.end());
    scales.insert(scales.end(), after[r].scales.begin(), after[r].scales.end());
    EXPECT_EQ(losses, whole[r].losses);
    EXPECT_EQ(scales, whole[r].scales);
    EXPECT_EQ(after[r].params, whole[r].params);
  }
}

INSTANTIATE_TEST_SUITE_P(
    StagesPrecisionsWorlds, ResumeTest,
    ::testing::Combine(::testing::Values(1, 2), ::testing::Values(0, 1, 2, 3),
                       ::testing::Values("", R"(, "bf16": {"enabled": true})",
                                         R"(, "fp16": {"enabled": true, "initial_scale_power": 14,
                                                       "loss_scale_window": 3})")),
    [](const auto& info) {
      const std::string p = std::get<2>(info.param);
      return absl::StrCat(
          "world", std::get<0>(info.param), "_stage", std::get<1>(info.param),
          p.empty() ? "_fp32" : (p.find("bf16") != std::string::npos ? "_bf16" : "_fp16"));
    });

// A state saved under one layout refuses another, saying what differs.
TEST(ResumeTest, MismatchedStateIsRefused) {
  const config::JobSpec stage1 = SmallGptSpec(1, 1, 1, 0.0);
  std::vector<std::string> states;
  TrainSteps(stage1, 1, 0, 1, nullptr, &states);
  const config::JobSpec stage3 = SmallGptSpec(1, 3, 1, 0.0);
  testing::CpuDevice alloc;
  auto e = Engine::Initialize(*model::Gpt::Create(testing::ModelShape(stage3), &alloc.ops), stage3);
  ASSERT_THAT(e, IsOk());
  EXPECT_THAT((*e)->LoadState(states[0]), StatusIs(absl::StatusCode::kFailedPrecondition,
                                                   ::testing::HasSubstr("written at stage 1")));
  EXPECT_THAT((*e)->LoadState("junk"), StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
}

}  // namespace
}  // namespace dstrain::engine
