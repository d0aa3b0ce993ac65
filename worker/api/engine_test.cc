// dstrain::Initialize as a user calls it: a DeepSpeed config and a module of their own, ranks
// meeting through a TCP store (threads of this process here; processes under `dstrain launch`
// in //docs/examples/mlp), Gloo groups, checkpoints saved, resumed, resharded and exported.
#include "worker/api/engine.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/api/testing/mlp_module.h"
#include "worker/engine/checkpoint_io.h"
#include "worker/env/env.h"
#include "worker/model/safetensors.h"
#include "worker/store/tcp_store.h"

namespace dstrain {
namespace {

using ::dstrain::api::testing::Data;
using ::dstrain::api::testing::MakeData;
using ::dstrain::api::testing::Mlp;
using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int kGlobalBatch = 32;

std::string Config(int stage, int gas, double clip = 0.0, const std::string& extra = "") {
  return absl::StrFormat(R"({
    "train_batch_size": %d, "gradient_accumulation_steps": %d,
    "optimizer": {"type": "AdamW", "params": {"lr": 0.01, "weight_decay": 0.01}},
    "zero_optimization": {"stage": %d}, "gradient_clipping": %g%s})",
                         kGlobalBatch, gas, stage, clip, extra);
}

std::string TempDir(const std::string& name) {
  const char* t = std::getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(t != nullptr ? t : "/tmp", "/", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Runs fn(rank, options) on `world` threads, each a rank with its own InitializeOptions (CPU
// device, the store of this run).
void RunRanks(int world, const std::function<void(int, const InitializeOptions&)>& fn) {
  auto server = store::TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_THAT(server, IsOk());
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      InitializeOptions o;
      o.rank = r;
      o.world_size = world;
      o.local_rank = r;
      o.device = "cpu";
      o.threads = 1;
      o.store = absl::StrCat("127.0.0.1:", (*server)->port());
      o.comm_timeout = absl::Seconds(60);
      fn(r, o);
    });
  }
  for (std::thread& t : threads) t.join();
}

// `steps` optimizer steps of rank `rank`'s share of the global batch; the losses Step reports.
std::vector<float> TrainSteps(Engine& e, int first_step, int steps) {
  std::vector<float> losses;
  const int gas = static_cast<int>(e.gradient_accumulation_steps());
  for (int step = first_step; step < first_step + steps; ++step) {
    for (int micro = 0; micro < gas; ++micro) {
      const Data d = MakeData(step * gas + micro, e.rank(), static_cast<int>(e.micro_batch_size()));
      EXPECT_THAT(e.Forward(d.batch()), IsOk());
      EXPECT_THAT(e.Backward(), IsOk());
      absl::StatusOr<std::optional<StepStats>> stats = e.Step();
      EXPECT_THAT(stats, IsOk());
      if (!stats.ok()) return losses;
      EXPECT_EQ(stats->has_value(), micro == gas - 1) << "a step only at the boundary";
      if (stats->has_value()) losses.push_back(static_cast<float>((*stats)->loss));
    }
  }
  return losses;
}

std::vector<float> Gather(Engine& e) {
  absl::StatusOr<GatheredParams> p = e.GatherParams();
  EXPECT_THAT(p, IsOk());
  return p.ok() ? p->flat : std::vector<float>();
}

TEST(Initialize, OneProcessTrainsAModuleFromADeepSpeedConfig) {
  InitializeOptions o;
  o.world_size = 1;
  o.rank = 0;
  o.device = "cpu";
  absl::StatusOr<std::unique_ptr<Engine>> e =
      Initialize(std::make_unique<Mlp>(), Config(0, 2, 1.0), o);
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ((*e)->micro_batch_size(), kGlobalBatch / 2);
  EXPECT_EQ((*e)->config().optimizer.type, "AdamW");
  EXPECT_NE((*e)->layout().Find("fc2.w"), nullptr);
  const std::vector<float> losses = TrainSteps(**e, 0, 60);
  ASSERT_EQ(losses.size(), 60u);
  EXPECT_GT(losses.front(), 1.2f);  // about ln 4
  EXPECT_LT(losses.back(), 0.6f);
  EXPECT_EQ((*e)->global_steps(), 60);
  const Data d = MakeData(999, 0, 64);
  absl::StatusOr<float> eval = (*e)->Evaluate(d.batch());
  ASSERT_THAT(eval, IsOk());
  EXPECT_LT(*eval, 0.8f);
  absl::StatusOr<GatheredParams> p = (*e)->GatherParams();
  ASSERT_THAT(p, IsOk());
  absl::StatusOr<absl::Span<const float>> b = p->Get("fc1.b");
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(b->size(), 16u);
  EXPECT_THAT(p->Get("fc9.w"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("fc9.w")));
}

// fp16 with dynamic loss scaling and an LR schedule, as a DeepSpeed config asks, for a module:
// the scale reaches the module's loss gradient (Pass::loss_grad) and the schedule the steps.
TEST(Initialize, Fp16LossScalingAndTheLrScheduleWorkForAModule) {
  InitializeOptions o;
  o.world_size = 1;
  o.rank = 0;
  o.device = "cpu";
  auto e = Initialize(std::make_unique<Mlp>(), R"({
    "train_batch_size": 32, "optimizer": {"type": "AdamW", "params": {"lr": 0.01}},
    "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 0.01,
                  "warmup_num_steps": 10, "total_num_steps": 60, "warmup_type": "linear"}},
    "fp16": {"enabled": true, "initial_scale_power": 8, "loss_scale_window": 10},
    "zero_optimization": {"stage": 1}})",
                      o);
  ASSERT_THAT(e, IsOk());
  std::vector<double> lrs, scales;
  std::vector<float> losses;
  for (int step = 0; step < 60; ++step) {
    const Data d = MakeData(step, 0, kGlobalBatch);
    ASSERT_THAT((*e)->Forward(d.batch()), IsOk());
    ASSERT_THAT((*e)->Backward(), IsOk());
    auto stats = (*e)->Step();
    ASSERT_THAT(stats, IsOk());
    ASSERT_TRUE(stats->has_value());
    lrs.push_back((*stats)->lr);
    scales.push_back((*stats)->loss_scale);
    losses.push_back(static_cast<float>((*stats)->loss));
  }
  EXPECT_EQ(scales.front(), 256.0);  // 2^initial_scale_power
  EXPECT_GT(scales.back(), 256.0) << "the scale grows after loss_scale_window clean steps";
  EXPECT_LT(lrs[1], lrs[9]);  // warming up
  // At its peak at the end of the warmup (lr_schedule_test.cc checks DeepSpeed's exact steps).
  const auto peak = std::max_element(lrs.begin(), lrs.end());
  EXPECT_NEAR(*peak, 0.01, 1e-3);
  EXPECT_NEAR(peak - lrs.begin(), 10, 2);
  EXPECT_LT(lrs[50], lrs[20]);  // decaying
  EXPECT_LT(losses.back(), 0.8f);
}

// Gloo between threads: ZeRO-2 takes bitwise stage 0's steps with one micro-batch per step and
// no clipping (module_model_test.cc's reasoning), and both train.
TEST(Initialize, TwoRanksThroughTheStoreZeroTwoMatchesStageZero) {
  std::vector<std::vector<float>> weights(2), losses(2);
  for (int stage : {0, 2}) {
    RunRanks(2, [&](int rank, const InitializeOptions& o) {
      absl::StatusOr<std::unique_ptr<Engine>> e =
          Initialize(std::make_unique<Mlp>(), Config(stage, 1), o);
      ASSERT_THAT(e, IsOk());
      EXPECT_EQ((*e)->world_size(), 2);
      EXPECT_EQ((*e)->micro_batch_size(), kGlobalBatch / 2);
      const std::vector<float> l = TrainSteps(**e, 0, 30);
      const std::vector<float> w = Gather(**e);
      if (rank == 0) losses[stage / 2] = l, weights[stage / 2] = w;
    });
  }
  ASSERT_EQ(losses[0].size(), 30u);
  EXPECT_LT(losses[0].back(), 0.7f);
  EXPECT_EQ(losses[1], losses[0]);
  EXPECT_EQ(weights[1], weights[0]);
}

// Save at step 6 on two ranks (ZeRO-2), go on to 12; two fresh ranks load the save and take
// bitwise the same steps 7-12. One process at stage 0 loads the same save resharded: the
// weights of step 6. Export writes them as safetensors under the parameters' names.
TEST(Initialize, CheckpointsResumeReshardAndExport) {
  const std::string dir = TempDir("ckpt");
  std::vector<float> at_save, at_end, resumed;
  RunRanks(2, [&](int rank, const InitializeOptions& o) {
    auto e = Initialize(std::make_unique<Mlp>(), Config(2, 2, 0.5), o);
    ASSERT_THAT(e, IsOk());
    TrainSteps(**e, 0, 6);
    ASSERT_THAT((*e)->SaveCheckpoint(dir, "", absl::StrCat("position ", 6)), IsOk());
    const std::vector<float> w = Gather(**e);
    TrainSteps(**e, 6, 6);
    const std::vector<float> end = Gather(**e);
    if (rank == 0) at_save = w, at_end = end;
  });
  ASSERT_TRUE(std::filesystem::exists(dir + "/global_step6"));
  RunRanks(2, [&](int rank, const InitializeOptions& o) {
    auto e = Initialize(std::make_unique<Mlp>(), Config(2, 2, 0.5), o);
    ASSERT_THAT(e, IsOk());
    absl::StatusOr<std::string> state = (*e)->LoadCheckpoint(dir);
    ASSERT_THAT(state, IsOk());
    EXPECT_EQ(*state, "position 6");
    EXPECT_EQ((*e)->global_steps(), 6);
    TrainSteps(**e, 6, 6);
    const std::vector<float> end = Gather(**e);
    if (rank == 0) resumed = end;
  });
  EXPECT_EQ(resumed, at_end);

  InitializeOptions one;
  one.rank = 0;
  one.world_size = 1;
  one.device = "cpu";
  auto single = Initialize(std::make_unique<Mlp>(), Config(0, 1), one);
  ASSERT_THAT(single, IsOk());
  ASSERT_THAT((*single)->LoadCheckpoint(dir, "global_step6"), IsOk());
  const std::vector<float> loaded = Gather(**single);
  EXPECT_EQ(loaded, at_save);
  EXPECT_EQ((*single)->global_steps(), 6);

  const std::string out = TempDir("export") + "/mlp.safetensors";
  ASSERT_THAT(engine::ExportCheckpoint(env::PosixEnv::Default(), dir, "latest", out,
                                       engine::ExportFormat::kSafetensors),
              IsOk());
  absl::StatusOr<model::SafetensorsFile> f = model::ReadSafetensors(out);
  ASSERT_THAT(f, IsOk());
  EXPECT_EQ(f->metadata.at("model"), "module");
  ASSERT_EQ(f->tensors.size(), 4u);
  for (const model::ParamSpec& p : (*single)->layout().params()) {
    EXPECT_EQ(f->tensors.at(p.name).shape, p.shape);
    EXPECT_EQ(f->tensors.at(p.name).data,
              std::vector<float>(at_save.begin() + p.offset, at_save.begin() + p.offset + p.numel))
        << p.name;
  }
  EXPECT_THAT(engine::ExportCheckpoint(env::PosixEnv::Default(), dir, "latest",
                                       TempDir("export") + "/mlp.bin", engine::ExportFormat::kLlmc),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("safetensors")));

  // Another module (fc1 of 12, not 16) is refused naming what differs; nothing is loaded.
  auto other = Initialize(std::make_unique<Mlp>(12), Config(0, 1), one);
  ASSERT_THAT(other, IsOk());
  EXPECT_THAT((*other)->LoadCheckpoint(dir),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("fc1.w: checkpoint has [16, 8] matrix, this module has [12, 8]")));
}

// zero_optimization.gather_16bit_weights_on_model_save: the save carries the whole model as
// safetensors, gathered from the ranks of ZeRO-3.
TEST(Initialize, ConsolidatedModelOfAModuleIsSafetensors) {
  const std::string dir = TempDir("consolidated");
  std::vector<float> weights;
  RunRanks(2, [&](int rank, const InitializeOptions& o) {
    auto e = Initialize(std::make_unique<Mlp>(), R"({
      "train_batch_size": 32, "optimizer": {"type": "AdamW", "params": {"lr": 0.01}},
      "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": true}})",
                        o);
    ASSERT_THAT(e, IsOk());
    TrainSteps(**e, 0, 3);
    ASSERT_THAT((*e)->SaveCheckpoint(dir, "final"), IsOk());
    const std::vector<float> w = Gather(**e);
    if (rank == 0) weights = w;
  });
  absl::StatusOr<model::SafetensorsFile> f =
      model::ReadSafetensors(dir + "/final/model.safetensors");
  ASSERT_THAT(f, IsOk());
  absl::StatusOr<model::ParamLayout> layout =
      model::ParamLayout::FromDeclared({{"fc1", {{"fc1.w", {16, 8}, true}, {"fc1.b", {16}}}},
                                        {"fc2", {{"fc2.w", {4, 16}, true}, {"fc2.b", {4}}}}});
  ASSERT_THAT(layout, IsOk());
  for (const model::ParamSpec& p : layout->params()) {
    EXPECT_EQ(f->tensors.at(p.name).data,
              std::vector<float>(weights.begin() + p.offset, weights.begin() + p.offset + p.numel))
        << p.name;
  }
}

TEST(Initialize, BadInputIsAnErrorNamingWhatIsWrong) {
  InitializeOptions o;
  o.rank = 0;
  o.world_size = 2;
  o.device = "cpu";
  o.store = "";
  setenv("DSTRAIN_STORE", "", 1);
  EXPECT_THAT(Initialize(std::make_unique<Mlp>(), Config(0, 1), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dstrain launch")));
  o.world_size = 1;
  EXPECT_THAT(
      Initialize(std::make_unique<Mlp>(), R"({"train_batch_size": 8, "model": {"n_layer": 2}})", o),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model: a job file's block")));
  EXPECT_THAT(Initialize(std::make_unique<Mlp>(), R"({"train_batch_size": 8, "fp16": 1})", o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fp16")));
  o.device = "tpu";
  EXPECT_THAT(Initialize(std::make_unique<Mlp>(), Config(0, 1), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"tpu\"")));
  o.device = "cpu";
  o.rank = 1;
  EXPECT_THAT(Initialize(std::make_unique<Mlp>(), Config(0, 1), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank 1 of world size 1")));
  o.rank = -1;
  o.world_size = -1;
  setenv("RANK", "one", 1);
  EXPECT_THAT(Initialize(std::make_unique<Mlp>(), Config(0, 1), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("$RANK")));
  unsetenv("RANK");
  EXPECT_THAT(Initialize(nullptr, Config(0, 1), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no module")));

  // A checkpoint mid-accumulation, a backward without a forward.
  auto e = Initialize(std::make_unique<Mlp>(), Config(0, 2), o);
  ASSERT_THAT(e, IsOk());
  EXPECT_THAT((*e)->Backward(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                         HasSubstr("without a preceding Forward")));
  const Data d = MakeData(0, 0, static_cast<int>((*e)->micro_batch_size()));
  ASSERT_THAT((*e)->Forward(d.batch()), IsOk());
  ASSERT_THAT((*e)->Backward(), IsOk());
  EXPECT_THAT((*e)->SaveCheckpoint(TempDir("mid")), StatusIs(absl::StatusCode::kFailedPrecondition,
                                                             HasSubstr("between optimizer steps")));
  EXPECT_THAT((*e)->LoadCheckpoint(TempDir("empty")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("empty")));
}

}  // namespace
}  // namespace dstrain
