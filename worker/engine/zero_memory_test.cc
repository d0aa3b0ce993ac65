// Every rank's allocator after training steps under ZeRO stages 0-3, against the figures
// `dstrain estimate` prints (worker/zero/estimate.h): model states and activations exactly,
// gradient buckets and gathered modules within their stated bounds.
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"
#include "worker/model/gpt.h"
#include "worker/zero/estimate.h"

namespace dstrain::engine {
namespace {

using ::dstrain::testing::IsOk;
using testing::Batch;
using testing::RunOnRanks;
using testing::SmallGptSpec;

class ZeroMemoryTest : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(ZeroMemoryTest, AllocatorMatchesTheEstimate) {
  const auto [world, stage, bf16] = GetParam();
  const std::string extra =
      R"(, "reduce_bucket_size": 3000, "overlap_comm": true, "allgather_bucket_size": 2000,
         "stage3_param_persistence_threshold": 0, "stage3_max_live_parameters": 6000,
         "stage3_max_reuse_distance": 0)";
  const config::JobSpec spec = SmallGptSpec(world, stage, /*gas=*/2, /*clip=*/1.0, extra, 20,
                                            bf16 ? R"(, "bf16": {"enabled": true})" : "");
  const model::GptConfig shape = testing::ModelShape(spec);
  auto layout = model::ParamLayout::ForGpt(shape);
  ASSERT_THAT(layout, IsOk());
  const int B = static_cast<int>(spec.train_micro_batch_size_per_gpu), T = spec.data.seq_len;
  testing::CpuDevice sizing;  // the device the estimate is for: the CPU, as the ranks'
  const zero::MemoryEstimate want = zero::EstimateMemory(
      *layout, shape, spec.zero, stage, world, B, T, sizing.ops, zero::StatePrecision::Of(spec));
  std::vector<tensor::MemoryStats> stats(world);
  RunOnRanks(world, [&](int r, comm::Communicator* comm) {
    testing::CpuDevice alloc;
    auto e = Engine::Initialize(*model::Gpt::Create(shape, &alloc.ops), spec, comm);
    ASSERT_THAT(e, IsOk());
    alloc.ResetPeaks();  // the initial full copy (category other) is gone; measure training
    for (int step = 0; step < 3; ++step) {
      for (int m = 0; m < 2; ++m) {
        const auto [x, y] = Batch(spec, step, r, m);
        ASSERT_THAT((*e)->Forward(x.data(), y.data()), IsOk());
        ASSERT_THAT((*e)->Backward(), IsOk());
        ASSERT_THAT((*e)->Step(), IsOk());
      }
    }
    stats[r] = alloc.Stats();
  });
  for (int r = 0; r < world; ++r) {
    SCOPED_TRACE(absl::StrCat("rank ", r, " of ", world, ", stage ", stage, bf16 ? ", bf16" : ""));
    const tensor::MemoryStats& s = stats[r];
    EXPECT_EQ(s.current[int(tensor::MemoryCategory::kParams)], want.params);
    EXPECT_EQ(s.current[int(tensor::MemoryCategory::kGrads)], want.grads);
    EXPECT_EQ(s.current[int(tensor::MemoryCategory::kOptimizerState)], want.optimizer_state);
    EXPECT_EQ(s.current[int(tensor::MemoryCategory::kActivations)], want.activations);
    EXPECT_EQ(s.current[int(tensor::MemoryCategory::kOther)], 0);
    EXPECT_LE(s.peak[int(tensor::MemoryCategory::kCommBuffers)], want.comm_buffers_peak);
    EXPECT_LE(s.peak[int(tensor::MemoryCategory::kGatheredParams)], want.gathered_params_peak);
    if (stage >= 2 && world > 1) {
      EXPECT_GT(s.peak[int(tensor::MemoryCategory::kCommBuffers)], 0);
    }
    if (stage == 3 || bf16) {
      EXPECT_GT(s.peak[int(tensor::MemoryCategory::kGatheredParams)], 0);
    }
    // Partitioning pays: each stage holds less than the one before at world > 1.
    if (world > 1 && stage > 0) {
      const zero::MemoryEstimate prev =
          zero::EstimateMemory(*layout, shape, spec.zero, stage - 1, world, B, T, sizing.ops,
                               zero::StatePrecision::Of(spec));
      EXPECT_LT(want.model_states(), prev.model_states());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(WorldsAndStages, ZeroMemoryTest,
                         ::testing::Combine(::testing::Values(1, 2, 4),
                                            ::testing::Values(0, 1, 2, 3), ::testing::Bool()),
                         [](const auto& info) {
                           return absl::StrCat("world", std::get<0>(info.param), "_stage",
                                               std::get<1>(info.param),
                                               std::get<2>(info.param) ? "_bf16" : "");
                         });

}  // namespace
}  // namespace dstrain::engine
