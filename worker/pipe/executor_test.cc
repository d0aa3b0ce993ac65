// The pipeline executor against the same model unsplit, on the same global batch: 2 and 4
// stages, 1 and 2 data-parallel ranks, 20 steps of 4 micro-batches with clipping active. Ranks
// are threads over a FakeCommunicator.
//
// What differs, and why it stays small: the tied token embedding's gradient. Unsplit, the head's
// and the encoder's parts of each micro-batch are added into one buffer in turn; pipelined, each
// end sums its own part over the micro-batches and the two sums are added at the step (DeepSpeed's
// ReduceTiedGrads does the same). That is another rounding of the same sum, ~1e-7 relative, and
// the gradient norm, summed per stage and then over the stages, rounds differently too. Every
// other gradient is computed by the same operations on the same values. The bounds are
// zero_parity_test's for the same kind of perturbation: losses 1e-6 relative, gradient norms
// 1e-5, weights 1e-4 in relative L2 and 1e-3 (lr/10) in the worst float. They can fail: a
// pipeline whose two ends do not sum the tied gradients drifts far outside them.
#include "worker/pipe/executor.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/config/config.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"
#include "worker/model/gpt.h"
#include "worker/pipe/layer_partition.h"
#include "worker/pipe/schedule.h"
#include "worker/pipe/topology.h"

namespace dstrain::pipe {
namespace {

using ::dstrain::testing::IsOk;
using engine::testing::Batch;
using engine::testing::RunOnRanks;

constexpr int kSteps = 20;
constexpr int kLayers = 4;

// The job as the unsplit model sees it: `dp` data-parallel ranks, 4 blocks.
config::JobSpec Spec(int dp, int gas, double clip, int zero_stage) {
  const std::string json = absl::StrFormat(
      R"({"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": %d,
          "gradient_clipping": %g,
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.1}},
          "zero_optimization": {"stage": %d},
          "model": {"type": "gpt", "n_layer": %d, "n_head": 2, "n_embd": 24, "vocab_size": 37,
                    "block_size": 8, "init_seed": 7},
          "data": {"train": "x_*.bin", "seq_len": 8},
          "job": {"train_steps": %d, "world_size": %d}})",
      gas, clip, zero_stage, kLayers, kSteps, dp);
  auto spec = config::ParseJobSpec(json, "/tmp");
  EXPECT_THAT(spec, IsOk());
  return spec.ok() ? *spec : config::JobSpec();
}

struct Result {
  std::vector<double> losses, norms;  // per step
  std::vector<float> params;          // final, the unsplit model's flat layout
  std::vector<ExecutorStats> stage_stats;
};

Result TrainUnsplit(const config::JobSpec& spec, int dp) {
  Result out;
  std::mutex mu;
  RunOnRanks(dp, [&](int r, comm::Communicator* comm) {
    engine::testing::CpuDevice dev;
    auto e = engine::Engine::Initialize(
        *model::Gpt::Create(engine::testing::ModelShape(spec), &dev.ops), spec, comm);
    ASSERT_THAT(e, IsOk());
    std::vector<double> losses, norms;
    for (int step = 0; step < kSteps; ++step) {
      for (int m = 0; m < spec.gradient_accumulation_steps; ++m) {
        const auto [x, y] = Batch(spec, step, r, m);
        ASSERT_THAT((*e)->Forward(x.data(), y.data()), IsOk());
        ASSERT_THAT((*e)->Backward(), IsOk());
        auto st = (*e)->Step();
        ASSERT_THAT(st, IsOk());
        if (st->has_value()) {
          losses.push_back((**st).loss);
          norms.push_back((**st).grad_norm);
        }
      }
    }
    auto params = (*e)->GatherParams();
    ASSERT_THAT(params, IsOk());
    if (r != 0) return;
    std::lock_guard<std::mutex> lock(mu);
    out.losses = losses;
    out.norms = norms;
    out.params = *std::move(params);
  });
  return out;
}

// The same job on `stages` x `dp` ranks. `sum_tied` false leaves out the tied gradients' sum
// (the test that the bounds can fail).
Result TrainPipelined(const config::JobSpec& spec, int stages, int dp, bool sum_tied = true) {
  const int world = stages * dp;
  const int M = static_cast<int>(spec.gradient_accumulation_steps);
  const model::GptConfig shape = engine::testing::ModelShape(spec);
  auto whole = model::ParamLayout::ForGpt(shape);
  EXPECT_THAT(whole, IsOk());
  auto partition = PartitionLayers(shape, stages, "parameters");
  EXPECT_THAT(partition, IsOk());
  Result out;
  out.params.assign(whole->total(), 0.f);  // padding stays 0, as in GatherParams' layout
  std::vector<bool> covered(whole->params().size(), false);
  out.stage_stats.resize(stages);
  std::vector<std::vector<double>> rank_losses(world);
  std::mutex mu;
  RunOnRanks(world, [&](int r, comm::Communicator* comm) {
    auto topology = Topology::Create(world, stages);
    ASSERT_THAT(topology, IsOk());
    const int stage = topology->StageOf(r), d = topology->DataRankOf(r);
    auto groups = BuildGroups(*comm, *topology, {});
    ASSERT_THAT(groups, IsOk());
    ASSERT_NE(groups->data, nullptr);
    ASSERT_NE(groups->pipe, nullptr);
    ASSERT_EQ(groups->pipe->rank(), stage);
    ASSERT_EQ(groups->data->rank(), d);
    engine::testing::CpuDevice dev;
    auto model = model::Gpt::Create(shape, &dev.ops, (*partition)[stage].blocks);
    ASSERT_THAT(model, IsOk());
    (*model)->set_activation_plan({TrainBuffers(stages, M, stage), 0});
    auto e = engine::Engine::Initialize(*std::move(model), spec, groups->data.get());
    ASSERT_THAT(e, IsOk());
    (*e)->SetPipeline({groups->pipe.get(), sum_tied ? groups->tied.get() : nullptr, stage, stages});
    Executor executor(e->get(), groups->pipe.get(), stage, stages, {});
    std::vector<double> losses, norms;
    for (int step = 0; step < kSteps; ++step) {
      auto st = executor.TrainBatch([&](int m, int32_t* inputs, int32_t* targets) {
        const auto [x, y] = Batch(spec, step, d, m);
        if (inputs != nullptr) std::copy(x.begin(), x.end(), inputs);
        if (targets != nullptr) std::copy(y.begin(), y.end(), targets);
      });
      ASSERT_THAT(st, IsOk()) << "rank " << r << " step " << step;
      losses.push_back(st->loss);
      norms.push_back(st->grad_norm);
    }
    auto params = (*e)->GatherParams();
    ASSERT_THAT(params, IsOk());
    std::lock_guard<std::mutex> lock(mu);
    if (d == 0) out.stage_stats[stage] = executor.stats();
    rank_losses[r] = losses;
    if (r == 0) {
      out.losses = losses;
      out.norms = norms;
    }
    if (d != 0) return;
    // This stage's parameters into the unsplit layout; the tied wte comes from the first stage.
    const model::ParamLayout& mine = (*e)->model().layout();
    for (const model::ParamSpec& p : mine.params()) {
      if (p.name == "wte" && stage != 0) continue;
      const model::ParamSpec* full = whole->Find(p.name);
      ASSERT_NE(full, nullptr) << p.name;
      covered[full - whole->params().data()] = true;
      std::copy_n(params->begin() + p.offset, p.numel, out.params.begin() + full->offset);
    }
  });
  for (size_t i = 0; i < covered.size(); ++i) {
    EXPECT_TRUE(covered[i]) << whole->params()[i].name << " is on no stage";
  }
  // Every rank reports the pipeline's loss.
  for (int r = 1; r < world; ++r) EXPECT_EQ(rank_losses[r], rank_losses[0]) << "rank " << r;
  return out;
}

double RelativeL2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    d = std::max(d, double(std::fabs(a[i] - b[i])));
  }
  return d;
}

constexpr double kWeightL2Bound = 1e-4;

TEST(ExecutorTest, PipelinedEqualsUnsplitWithinTheTiedSumsRounding) {
  const int gas = 4;
  const double clip = 0.5;
  for (int dp : {1, 2}) {
    const config::JobSpec spec = Spec(dp, gas, clip, /*zero_stage=*/1);
    const Result ref = TrainUnsplit(spec, dp);
    ASSERT_EQ(ref.losses.size(), static_cast<size_t>(kSteps));
    EXPECT_LT(ref.losses.back(), ref.losses.front() - 0.5) << "the model should learn";
    int clipped = 0;
    for (double n : ref.norms) clipped += n > clip;
    EXPECT_GE(clipped, kSteps / 2) << "clipping must bind for the norm to matter";
    for (int stages : {2, 4}) {
      SCOPED_TRACE(absl::StrCat(stages, " stages x ", dp, " data-parallel ranks"));
      const Result got = TrainPipelined(spec, stages, dp);
      ASSERT_EQ(got.losses.size(), ref.losses.size());
      for (size_t i = 0; i < ref.losses.size(); ++i) {
        EXPECT_NEAR(got.losses[i], ref.losses[i], 1e-6 * std::fabs(ref.losses[i]))
            << "step " << i + 1;
        EXPECT_NEAR(got.norms[i], ref.norms[i], 1e-5 * ref.norms[i]) << "step " << i + 1;
      }
      EXPECT_LE(RelativeL2(got.params, ref.params), kWeightL2Bound);
      EXPECT_LE(MaxAbsDiff(got.params, ref.params), 1e-3);

      // Point to point: each non-last stage sends one activation per micro-batch forward, each
      // non-first one gradient back, (B, T, C) f32 each, to the byte.
      const int64_t per_message = int64_t{2} * 8 * 24 * 4;
      for (int s = 0; s < stages; ++s) {
        const int64_t sends = (s < stages - 1 ? 1 : 0) + (s > 0 ? 1 : 0);
        EXPECT_EQ(got.stage_stats[s].bytes_sent, sends * per_message * gas * kSteps)
            << "stage " << s;
        EXPECT_EQ(got.stage_stats[s].bytes_received, sends * per_message * gas * kSteps)
            << "stage " << s;
      }
    }
  }
}

TEST(ExecutorTest, TheBoundsCanFail) {
  const config::JobSpec spec = Spec(1, 4, 0.5, 1);
  const Result ref = TrainUnsplit(spec, 1);
  const Result unsummed = TrainPipelined(spec, 2, 1, /*sum_tied=*/false);
  EXPECT_GT(RelativeL2(unsummed.params, ref.params), 10 * kWeightL2Bound);
}

// The partition printed at start names each stage's blocks; the stage models hold exactly the
// whole model's parameters between them (the tied wte twice).
TEST(ExecutorTest, StagesHoldTheWholeModel) {
  const config::JobSpec spec = Spec(1, 4, 0.0, 1);
  const model::GptConfig shape = engine::testing::ModelShape(spec);
  auto whole = model::ParamLayout::ForGpt(shape);
  ASSERT_THAT(whole, IsOk());
  for (int stages : {2, 4}) {
    auto partition = PartitionLayers(shape, stages, "parameters");
    ASSERT_THAT(partition, IsOk());
    int64_t sum = 0;
    for (const StagePartition& s : *partition) sum += s.parameters;
    const int64_t wte = whole->Find("wte")->numel;
    EXPECT_EQ(sum, whole->num_parameters() + wte) << stages << " stages";
  }
}

// Evaluation through the pipeline runs the same forward passes on the same parameters as the
// unsplit model: the last stage's sum of micro-batch losses is bitwise the unsplit one (only
// activations move between stages, unchanged), on 2 and 4 stages, with more micro-batches than
// activation buffers. Its traffic is evaluation's, not training's.
TEST(ExecutorTest, EvaluationEqualsTheUnsplitForwardBitwise) {
  const int kBatches = 5;
  const config::JobSpec spec = Spec(1, 4, 0.0, 1);
  const model::GptConfig shape = engine::testing::ModelShape(spec);
  const int B = 2, T = 8;
  double unsplit = 0;
  {
    engine::testing::CpuDevice dev;
    auto e = engine::Engine::Initialize(*model::Gpt::Create(shape, &dev.ops), spec);
    ASSERT_THAT(e, IsOk());
    auto params = (*e)->GatherParamsOnDevice();
    ASSERT_THAT(params, IsOk());
    for (int m = 0; m < kBatches; ++m) {
      const auto [x, y] = Batch(spec, 100, 0, m);
      auto loss = (*e)->gpt().Forward(params->view(), x.data(), y.data(), B, T);
      ASSERT_THAT(loss, IsOk());
      unsplit += *loss;
    }
  }
  for (int stages : {2, 4}) {
    SCOPED_TRACE(absl::StrCat(stages, " stages"));
    auto partition = PartitionLayers(shape, stages, "parameters");
    ASSERT_THAT(partition, IsOk());
    std::vector<double> sums(stages, -1);
    std::vector<ExecutorStats> train(stages), eval(stages);
    RunOnRanks(stages, [&](int r, comm::Communicator* comm) {
      auto topology = Topology::Create(stages, stages);
      ASSERT_THAT(topology, IsOk());
      auto groups = BuildGroups(*comm, *topology, {});
      ASSERT_THAT(groups, IsOk());
      engine::testing::CpuDevice dev;
      auto model = model::Gpt::Create(shape, &dev.ops, (*partition)[r].blocks);
      ASSERT_THAT(model, IsOk());
      (*model)->set_activation_plan({TrainBuffers(stages, 4, r), 0});
      auto e = engine::Engine::Initialize(*std::move(model), spec, groups->data.get());
      ASSERT_THAT(e, IsOk());
      (*e)->SetPipeline({groups->pipe.get(), groups->tied.get(), r, stages});
      Executor executor(e->get(), groups->pipe.get(), r, stages, {});
      auto params = (*e)->GatherParamsOnDevice();
      ASSERT_THAT(params, IsOk());
      auto sum = executor.EvalBatches(params->view(), kBatches,
                                      [&](int m, int32_t* inputs, int32_t* targets) {
                                        const auto [x, y] = Batch(spec, 100, 0, m);
                                        if (inputs != nullptr)
                                          std::copy(x.begin(), x.end(), inputs);
                                        if (targets != nullptr) {
                                          std::copy(y.begin(), y.end(), targets);
                                        }
                                      });
      ASSERT_THAT(sum, IsOk()) << "stage " << r;
      sums[r] = *sum;
      train[r] = executor.stats();
      eval[r] = executor.eval_stats();
    });
    EXPECT_EQ(sums[stages - 1], unsplit);
    const int64_t per_message = int64_t{B} * T * 24 * 4;
    for (int s = 0; s < stages; ++s) {
      if (s < stages - 1) {
        EXPECT_EQ(sums[s], 0.0) << "stage " << s;
      }
      EXPECT_EQ(train[s].bytes_sent + train[s].bytes_received, 0) << "stage " << s;
      EXPECT_EQ(eval[s].bytes_sent, (s < stages - 1 ? 1 : 0) * per_message * kBatches);
      EXPECT_EQ(eval[s].bytes_received, (s > 0 ? 1 : 0) * per_message * kBatches);
    }
  }
}

}  // namespace
}  // namespace dstrain::pipe
