// A user-defined module (an MLP classifier) trained by the engine through ModuleModel: gradients
// against finite differences, the loss falling on a learnable task, ZeRO stages 1-3 bitwise equal
// to stage 0 on two ranks, bf16, and clear errors for bad declarations and passes.
#include "worker/api/module_model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/random/rng.h"
#include "common/status/status_macros.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/api/testing/mlp_module.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"
#include "worker/model/param_access.h"

namespace dstrain::api {
namespace {

using ::dstrain::testing::IsOk;
using ::testing::HasSubstr;

using api::testing::Data;
using api::testing::kClasses;
using api::testing::kIn;
using api::testing::MakeData;
using api::testing::Mlp;
constexpr int kHidden = 16;

std::unique_ptr<ModuleModel> MakeModel(device::Ops* ops) {
  auto m = ModuleModel::Create(std::make_unique<Mlp>(), ops);
  EXPECT_THAT(m, IsOk());
  return m.ok() ? *std::move(m) : nullptr;
}

TEST(ModuleModel, LaysOutTheDeclaredModules) {
  engine::testing::CpuDevice dev;
  auto m = MakeModel(&dev.ops);
  ASSERT_NE(m, nullptr);
  const model::ParamLayout& layout = m->layout();
  ASSERT_EQ(layout.modules().size(), 2u);
  EXPECT_EQ(layout.modules()[0].name, "fc1");
  EXPECT_EQ(layout.num_parameters(), kHidden * kIn + kHidden + kClasses * kHidden + kClasses);
  EXPECT_TRUE(layout.Find("fc2.w")->matrix);
  EXPECT_FALSE(layout.Find("fc2.b")->matrix);
  EXPECT_EQ(layout.Find("fc1.b")->offset % 16, 0);
  // Deterministic from the seed, zeros where declared, the padding zero.
  std::vector<float> a(layout.total()), b(layout.total()), c(layout.total());
  m->InitParams(a.data(), 7);
  m->InitParams(b.data(), 7);
  m->InitParams(c.data(), 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(a[layout.Find("fc1.b")->offset], 0.f);
  double sq = 0;
  const model::ParamSpec& w = *layout.Find("fc1.w");
  for (int64_t i = 0; i < w.numel; ++i) sq += a[w.offset + i] * a[w.offset + i];
  EXPECT_NEAR(std::sqrt(sq / w.numel), 0.3, 0.06);
}

// Backward's gradients against central differences of Forward's loss (f32 arithmetic: the step
// and the tolerance are sized for it).
TEST(ModuleModel, GradientsMatchFiniteDifferences) {
  engine::testing::CpuDevice dev;
  auto m = MakeModel(&dev.ops);
  ASSERT_NE(m, nullptr);
  const int64_t n = m->layout().total();
  std::vector<float> params(n), grads(n, 0.f);
  m->InitParams(params.data(), 3);
  const Data data = MakeData(0, 0, 6);
  const model::Batch batch = data.batch();
  const tensor::View pv = tensor::View::Flat(params.data(), DType::kF32, n);
  const tensor::View gv = tensor::View::Flat(grads.data(), DType::kF32, n);
  model::FlatParamAccess access(m->layout(), pv, gv);
  ASSERT_THAT(m->Forward(access, batch, model::LossGrad{1.0, 1}), IsOk());
  ASSERT_THAT(m->Backward(access), IsOk());
  model::FlatParamAccess eval(m->layout(), pv);
  int checked = 0;
  for (const model::ParamSpec& p : m->layout().params()) {
    for (int64_t k = 0; k < p.numel; k += 7) {
      float& v = params[p.offset + k];
      const float keep = v, eps = 1e-2f;
      v = keep + eps;
      auto up = m->Forward(eval, batch, std::nullopt);
      v = keep - eps;
      auto down = m->Forward(eval, batch, std::nullopt);
      v = keep;
      ASSERT_THAT(up, IsOk());
      ASSERT_THAT(down, IsOk());
      const double fd = (static_cast<double>(*up) - *down) / (2.0 * eps);
      const double g = grads[p.offset + k];
      EXPECT_NEAR(g, fd, 2e-3 + 2e-2 * std::abs(fd)) << p.name << "[" << k << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 30);
}

// Trains `steps` steps on `world` ranks at ZeRO `stage`; rank 0's losses and final weights.
using engine::testing::TrainRun;
TrainRun Train(int world, int stage, int steps, int gas = 2, double clip = 1.0,
               const std::string& top_extra = "") {
  TrainRun run;
  engine::testing::RunOnRanks(world, [&](int rank, comm::Communicator* dp) {
    engine::testing::CpuDevice dev;
    const config::JobSpec spec =
        engine::testing::SmallGptSpec(world, stage, gas, clip, "", steps, top_extra);
    auto e = engine::Engine::Initialize(MakeModel(&dev.ops), spec, world > 1 ? dp : nullptr);
    ASSERT_THAT(e, IsOk());
    for (int step = 0; step < steps; ++step) {
      for (int micro = 0; micro < gas; ++micro) {
        const Data d = MakeData(step * gas + micro, rank, 32 / gas);
        ASSERT_THAT((*e)->Forward(d.batch()), IsOk());
        ASSERT_THAT((*e)->Backward(), IsOk());
      }
      auto stats = (*e)->Step();
      ASSERT_THAT(stats, IsOk());
      ASSERT_TRUE(stats->has_value());
      if (rank == 0) run.losses.push_back(static_cast<float>((*stats)->loss));
    }
    auto w = (*e)->GatherParams(/*keep=*/rank == 0);
    ASSERT_THAT(w, IsOk());
    if (rank == 0) run.weights = *w;
  });
  return run;
}

TEST(ModuleModel, TheEngineTrainsIt) {
  const TrainRun run = Train(1, 0, 60);
  ASSERT_EQ(run.losses.size(), 60u);
  EXPECT_GT(run.losses.front(), 1.2f);  // about ln 4
  EXPECT_LT(run.losses.back(), 0.6f) << "the loss did not fall";
}

// ZeRO moves where the state lives, not the arithmetic (worker/engine/zero_parity_test.cc has
// the reasoning): with one micro-batch per step and no clipping, stages 1-3 take bitwise stage
// 0's steps on two ranks. With accumulation and clipping the sums are rounded in another order
// (stages 2-3 average each micro-batch's gradients before summing them; the norm is summed per
// partition): the same bounds as the GPT's parity test.
TEST(ModuleModel, ZeroStagesMatchStageZeroOnTwoRanks) {
  const TrainRun base = Train(2, 0, 8, /*gas=*/1, /*clip=*/0);
  ASSERT_FALSE(base.weights.empty());
  for (int stage = 1; stage <= 3; ++stage) {
    const TrainRun run = Train(2, stage, 8, 1, 0);
    EXPECT_EQ(run.losses, base.losses) << "stage " << stage;
    EXPECT_EQ(run.weights, base.weights) << "stage " << stage;
  }
  const TrainRun accum = Train(2, 0, 8, /*gas=*/2, /*clip=*/0.5);
  for (int stage = 1; stage <= 3; ++stage) {
    engine::testing::ExpectWithinZeroParityBounds(Train(2, stage, 8, 2, 0.5), accum,
                                                  absl::StrCat("stage ", stage));
  }
}

TEST(ModuleModel, TrainsInBf16WithMatrixParametersIn16Bits) {
  const TrainRun fp32 = Train(1, 2, 40);
  const TrainRun bf16 = Train(1, 2, 40, 2, 1.0, R"(, "bf16": {"enabled": true})");
  EXPECT_LT(bf16.losses.back(), 0.8f);
  EXPECT_NE(bf16.weights, fp32.weights) << "bf16 changed nothing";
  for (size_t i = 0; i < fp32.weights.size(); ++i) {
    EXPECT_NEAR(bf16.weights[i], fp32.weights[i], 0.1) << i;
  }
}

class BadDeclaration final : public Module {
 public:
  explicit BadDeclaration(int which) : which_(which) {}
  absl::Status Declare(Declarer& d) override {
    if (which_ == 0) d.Add("w", {2}, Init::Zeros());  // before any module
    d.BeginModule("m");
    d.Add("w", {2, 3}, Init::Zeros());
    if (which_ == 1) d.Add("w", {3}, Init::Zeros());
    if (which_ == 2) d.Add("v", {4, 0}, Init::Zeros());
    if (which_ == 3) d.BeginModule("empty");
    if (which_ == 4) d.Add("u", {2}, Init::Normal(-1));
    return absl::OkStatus();
  }
  absl::StatusOr<float> Forward(Pass&, const Batch&) override { return 0.f; }
  absl::Status Backward(Pass&) override { return absl::OkStatus(); }

 private:
  int which_;
};

TEST(ModuleModel, BadDeclarationsAreRefusedByName) {
  engine::testing::CpuDevice dev;
  const char* want[] = {"parameter 'w' declared before any module", "parameter 'w' declared twice",
                        "parameter 'v': dimension 0", "module 'empty' has no parameter",
                        "standard deviation"};
  for (int which = 0; which < 5; ++which) {
    auto m = ModuleModel::Create(std::make_unique<BadDeclaration>(which), &dev.ops);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << which;
    EXPECT_THAT(m.status().message(), HasSubstr(want[which])) << which;
  }
}

// A module that misuses its pass, or whose backward writes a gradient of the wrong size, gets an
// error from the engine's call, not a crash.
class Misuse final : public Module {
 public:
  explicit Misuse(int which) : which_(which) {}
  absl::Status Declare(Declarer& d) override {
    d.BeginModule("m");
    d.Add("w", {4}, Init::Ones());
    return absl::OkStatus();
  }
  absl::StatusOr<float> Forward(Pass& pass, const Batch&) override {
    if (which_ == 0) return pass.Grads(0).status();
    if (which_ == 1) return pass.Params(3).status();
    DT_RETURN_IF_ERROR(pass.Activation("a", DType::kF32, {3}).status());
    if (which_ == 2) return pass.Activation("a", DType::kF32, {3}).status();
    return 1.f;
  }
  absl::Status Backward(Pass& pass) override {
    DT_ASSIGN_OR_RETURN(std::vector<View> g, pass.Grads(0));
    DT_ASSIGN_OR_RETURN(View a, pass.Saved("a"));
    pass.ops().AddInto(g[0], a);  // 3 elements into 4
    return absl::OkStatus();
  }

 private:
  int which_;
};

TEST(ModuleModel, MisuseIsAnErrorNotACrash) {
  engine::testing::CpuDevice dev;
  std::vector<float> params(16, 1.f), grads(16, 0.f);
  for (int which = 0; which < 4; ++which) {
    auto m = ModuleModel::Create(std::make_unique<Misuse>(which), &dev.ops);
    ASSERT_THAT(m, IsOk());
    model::FlatParamAccess access((*m)->layout(),
                                  tensor::View::Flat(params.data(), DType::kF32, 16),
                                  tensor::View::Flat(grads.data(), DType::kF32, 16));
    EXPECT_EQ((*m)->Backward(access).code(), absl::StatusCode::kFailedPrecondition)
        << "backward before forward";
    const model::Batch none;
    auto loss = (*m)->Forward(access, none, model::LossGrad{});
    if (which < 3) {
      EXPECT_FALSE(loss.ok()) << which;
      continue;
    }
    ASSERT_THAT(loss, IsOk());
    const absl::Status s = (*m)->Backward(access);
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(s.message(), HasSubstr("AddInto"));
  }
}

}  // namespace
}  // namespace dstrain::api
