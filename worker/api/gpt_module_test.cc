// The built-in GPT is a dstrain::Module like any user's (worker/model/gpt_module.h): its
// declarations lay out as the size table does, and a program that hands it to the library's
// dstrain::Initialize trains it bitwise as the trainer's engine trains a job file's GPT.
#include "worker/model/gpt_module.h"

#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/random/rng.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/api/engine.h"
#include "worker/api/module_model.h"
#include "worker/config/config.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"
#include "worker/model/gpt.h"

namespace dstrain {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int kMicro = 2, kT = 8, kGas = 2, kSteps = 4;
const model::GptConfig kShape{3, 2, 16, 37, 48, 8};  // L, NH, C, V, Vp, maxT

TEST(GptModule, DeclaresTheSizeTableLayout) {
  for (const model::BlockRange range : {model::BlockRange{}, model::BlockRange{0, 1},
                                        model::BlockRange{1, 2}, model::BlockRange{2, -1}}) {
    SCOPED_TRACE(absl::StrFormat("blocks [%d, %d)", range.first, range.end));
    auto module = model::GptModule::Create(kShape, range);
    ASSERT_THAT(module, IsOk());
    absl::StatusOr<model::ParamLayout> declared = api::ModuleModel::DeclaredLayout(**module);
    ASSERT_THAT(declared, IsOk());
    const model::ParamLayout table = *model::ParamLayout::ForGpt(kShape, range);
    EXPECT_EQ(declared->total(), table.total());
    ASSERT_EQ(declared->params().size(), table.params().size());
    for (size_t i = 0; i < table.params().size(); ++i) {
      const model::ParamSpec &d = declared->params()[i], &t = table.params()[i];
      EXPECT_EQ(d.name, t.name);
      EXPECT_EQ(d.shape, t.shape);
      EXPECT_EQ(d.offset, t.offset) << t.name;
      EXPECT_EQ(d.module, t.module) << t.name;
      EXPECT_EQ(d.matrix, t.matrix) << t.name;
    }
    ASSERT_EQ(declared->modules().size(), table.modules().size());
    for (size_t m = 0; m < table.modules().size(); ++m) {
      EXPECT_EQ(declared->modules()[m].name, table.modules()[m].name);
    }
  }
}

// Sequences that follow a rule (each token the previous plus one, mod V), so the loss falls.
void MakeTokens(int step, int micro, std::vector<int32_t>* x, std::vector<int32_t>* y) {
  Rng rng(1000 * step + micro);
  x->resize(kMicro * kT);
  y->resize(kMicro * kT);
  for (int b = 0; b < kMicro; ++b) {
    int32_t t = static_cast<int32_t>(rng.Below(kShape.vocab_size));
    for (int i = 0; i < kT; ++i) {
      (*x)[b * kT + i] = t;
      t = (t + 1) % kShape.vocab_size;
      (*y)[b * kT + i] = t;
    }
  }
}

// The DeepSpeed keys both runs share.
std::string DeepSpeedKeys(const std::string& precision) {
  return absl::StrFormat(
      R"("train_micro_batch_size_per_gpu": %d, "gradient_accumulation_steps": %d,
         "gradient_clipping": 0.5, "zero_optimization": {"stage": 2}%s,
         "optimizer": {"type": "AdamW", "params": {"lr": 0.01, "weight_decay": 0.1}},
         "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 2}})",
      kMicro, kGas, precision);
}

struct Trained {
  std::vector<float> losses;
  std::vector<float> weights;
};

// kSteps optimizer steps of kGas micro-batches each on `e` (either engine: the library's or the
// trainer's), `forward(x, y)` running one micro-batch's forward pass; the losses Step reports.
template <typename EngineT, typename ForwardFn>
std::vector<float> TrainSteps(EngineT& e, ForwardFn forward) {
  std::vector<float> losses;
  std::vector<int32_t> x, y;
  for (int step = 0; step < kSteps; ++step) {
    for (int micro = 0; micro < kGas; ++micro) {
      MakeTokens(step, micro, &x, &y);
      EXPECT_THAT(forward(x, y), IsOk());
      EXPECT_THAT(e.Backward(), IsOk());
      auto stats = e.Step();
      EXPECT_THAT(stats, IsOk());
      if (stats.ok() && stats->has_value()) losses.push_back((*stats)->loss);
    }
  }
  return losses;
}

// The library: a program hands the GPT module to dstrain::Initialize with a DeepSpeed config.
Trained TrainThroughInitialize(const std::string& precision) {
  InitializeOptions o;
  o.world_size = 1;
  o.rank = 0;
  o.device = "cpu";
  o.threads = 1;
  o.seed = 5;
  auto module = model::GptModule::Create(kShape);
  EXPECT_THAT(module, IsOk());
  auto e = Initialize(std::move(*module), "{" + DeepSpeedKeys(precision) + "}", o);
  EXPECT_THAT(e, IsOk());
  Trained run;
  if (!e.ok()) return run;
  run.losses = TrainSteps(**e, [&](const std::vector<int32_t>& x, const std::vector<int32_t>& y) {
    const std::vector<int64_t> shape = {kMicro, kT};
    model::Batch batch;
    batch.Add("tokens", {DType::kI32, shape, x.data()})
        .Add("targets", {DType::kI32, shape, y.data()});
    return (*e)->Forward(batch).status();
  });
  auto gathered = (*e)->GatherParams();
  EXPECT_THAT(gathered, IsOk());
  if (gathered.ok()) run.weights = gathered->flat;
  return run;
}

// The trainer: a job file's GPT (model::Gpt) in the engine the service runs.
Trained TrainAsAJob(const std::string& precision) {
  const std::string json = absl::StrFormat(
      R"({%s, "model": {"type": "gpt", "n_layer": %d, "n_head": %d, "n_embd": %d,
          "vocab_size": %d, "padded_vocab_size": %d, "block_size": %d, "init_seed": 5},
          "data": {"train": "x_*.bin", "seq_len": %d}, "job": {"train_steps": %d}})",
      DeepSpeedKeys(precision), kShape.n_layer, kShape.n_head, kShape.n_embd, kShape.vocab_size,
      kShape.padded_vocab_size, kShape.block_size, kT, kSteps);
  auto spec = config::ParseJobSpec(json, "/tmp");
  EXPECT_THAT(spec, IsOk());
  Trained run;
  if (!spec.ok()) return run;
  EXPECT_EQ(spec->model.padded_vocab_size, kShape.padded_vocab_size);
  engine::testing::CpuDevice device;
  auto gpt = model::Gpt::Create(kShape, &device.ops);
  EXPECT_THAT(gpt, IsOk());
  auto e = engine::Engine::Initialize(std::move(*gpt), *spec);
  EXPECT_THAT(e, IsOk());
  if (!e.ok()) return run;
  run.losses = TrainSteps(**e, [&](const std::vector<int32_t>& x, const std::vector<int32_t>& y) {
    return (*e)->Forward(x.data(), y.data()).status();
  });
  auto gathered = (*e)->GatherParams();
  EXPECT_THAT(gathered, IsOk());
  if (gathered.ok()) run.weights = *gathered;
  return run;
}

void ExpectBitwise(const Trained& a, const Trained& b) {
  ASSERT_EQ(a.losses.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(b.losses.size(), a.losses.size());
  for (int s = 0; s < kSteps; ++s) EXPECT_EQ(a.losses[s], b.losses[s]) << "step " << s;
  EXPECT_LT(a.losses.back(), a.losses.front());
  ASSERT_FALSE(a.weights.empty());
  ASSERT_EQ(a.weights.size(), b.weights.size());
  EXPECT_EQ(std::memcmp(a.weights.data(), b.weights.data(), a.weights.size() * sizeof(float)), 0);
}

TEST(GptModule, TrainsThroughInitializeBitwiseAsTheTrainerDoes) {
  const Trained library = TrainThroughInitialize("");
  const Trained job = TrainAsAJob("");
  ExpectBitwise(library, job);
}

TEST(GptModule, Bf16TrainsThroughInitializeBitwiseAsTheTrainerDoes) {
  const std::string bf16 = R"(, "bf16": {"enabled": true})";
  const Trained library = TrainThroughInitialize(bf16);
  const Trained job = TrainAsAJob(bf16);
  ExpectBitwise(library, job);
  // bf16 took effect: the products rounded their operands, so fp32 ends elsewhere.
  const Trained fp32 = TrainThroughInitialize("");
  ASSERT_EQ(fp32.weights.size(), library.weights.size());
  EXPECT_NE(
      std::memcmp(fp32.weights.data(), library.weights.data(), fp32.weights.size() * sizeof(float)),
      0);
}

// The module keeps its activations on one device: a pass on another is refused, not run.
TEST(GptModule, ActivationsStayOnTheDeviceTheyWereBoundTo) {
  engine::testing::CpuDevice a, b;
  auto module = model::GptModule::Create(kShape);
  ASSERT_THAT(module, IsOk());
  ASSERT_THAT((*module)->Bind(&a.ops), IsOk());
  EXPECT_THAT((*module)->Bind(&b.ops),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("another device")));
  auto unbound = model::GptModule::Create(kShape);
  ASSERT_THAT(unbound, IsOk());
  EXPECT_THAT((*unbound)->Prepare(kMicro, kT),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no device")));
}

}  // namespace
}  // namespace dstrain
