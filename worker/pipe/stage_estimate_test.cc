// dstrain estimate per pipeline stage against what each stage's model allocates: the activations
// of every stage, with its micro-batches in flight and the job's checkpointing, are exactly what
// the allocator holds once the stage's model is prepared; checkpointing lowers them as the
// estimate says; the stages' parameters add up to the model's (the tied embedding twice).
#include "worker/pipe/stage_estimate.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/model/gpt.h"
#include "worker/tensor/allocator.h"

namespace dstrain::pipe {
namespace {

using ::dstrain::testing::IsOk;

config::JobSpec Spec(int stages, int interval, bool bf16 = false) {
  const std::string json = absl::StrFormat(
      R"({"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4,
          "zero_optimization": {"stage": 1}, "bf16": {"enabled": %s},
          "pipeline": {"activation_checkpoint_interval": %d},
          "model": {"type": "gpt", "n_layer": 6, "n_head": 2, "n_embd": 16, "vocab_size": 37,
                    "block_size": 8},
          "data": {"train": "x_*.bin", "seq_len": 8},
          "job": {"train_steps": 1, "world_size": %d, "pipeline_stages": %d}})",
      bf16 ? "true" : "false", interval, 2 * stages, stages);
  auto spec = config::ParseJobSpec(json, "/tmp");
  EXPECT_THAT(spec, IsOk());
  return spec.ok() ? *spec : config::JobSpec();
}

// Also under bf16, whose products keep their inputs in bf16 on the CPU (a stage prepares them
// before its first pass, as the pipeline executor does, for the precision the engine sets).
TEST(StageEstimateTest, EveryStageAllocatesWhatItsEstimateSays) {
  for (int stages : {1, 2, 3}) {
    for (int interval : {0, 1, 2}) {
      for (bool bf16 : {false, true}) {
        SCOPED_TRACE(absl::StrFormat("%d stages, interval %d, bf16 %d", stages, interval, bf16));
        const config::JobSpec spec = Spec(stages, interval, bf16);
        tensor::CpuAllocator estimating;
        device::CpuOps estimate_ops(&estimating);
        auto estimates = EstimateStages(spec, estimate_ops);
        ASSERT_THAT(estimates, IsOk());
        auto fp32_estimates = EstimateStages(Spec(stages, interval), estimate_ops);
        ASSERT_THAT(fp32_estimates, IsOk());
        ASSERT_EQ(estimates->size(), static_cast<size_t>(stages));
        const config::ModelConfig& m = spec.model;
        const model::GptConfig shape{m.n_layer,           m.n_head,    m.n_embd, m.vocab_size,
                                     m.padded_vocab_size, m.block_size};
        int64_t parameters = 0;
        for (const StageEstimate& e : *estimates) {
          EXPECT_EQ(e.buffers, stages > 1 ? std::min(stages - e.stage, 4) : 1);
          tensor::CpuAllocator allocator;
          device::CpuOps ops(&allocator);
          auto gpt = model::Gpt::Create(shape, &ops, e.partition.blocks);
          ASSERT_THAT(gpt, IsOk());
          (*gpt)->set_activation_plan(StagePlan(spec, e.buffers));
          (*gpt)->set_matmul_precision(bf16 ? DType::kBF16 : DType::kF32);
          ASSERT_THAT((*gpt)->Prepare(2, 8), IsOk());
          EXPECT_EQ(allocator.Stats().current[int(tensor::MemoryCategory::kActivations)],
                    e.memory.activations)
              << "stage " << e.stage;
          EXPECT_EQ(e.memory.activations,
                    interval > 0 ? e.activations_checkpointed : e.activations_plain);
          EXPECT_LE(e.activations_checkpointed, e.activations_plain);
          if (interval > 0) {
            EXPECT_EQ(e.checkpoint_interval, interval);
          }
          // bf16 product inputs: fewer bytes than the fp32 job's on every stage.
          const int64_t fp32_activations = (*fp32_estimates)[e.stage].memory.activations;
          if (bf16) {
            EXPECT_LT(e.memory.activations, fp32_activations);
          } else {
            EXPECT_EQ(e.memory.activations, fp32_activations);
          }
          parameters += e.partition.parameters;
        }
        const int64_t wte = int64_t{m.padded_vocab_size} * m.n_embd;
        auto whole = model::ParamLayout::ForGpt(shape);
        ASSERT_THAT(whole, IsOk());
        EXPECT_EQ(parameters, whole->num_parameters() + (stages > 1 ? wte : 0));
      }
    }
  }
  // The first stage of 2 over 6 blocks, 2 micro-batches in flight, checkpointing every block:
  // fewer activations than without.
  tensor::CpuAllocator allocator;
  device::CpuOps ops(&allocator);
  auto e = EstimateStages(Spec(2, 1), ops);
  ASSERT_THAT(e, IsOk());
  EXPECT_LT((*e)[0].memory.activations, (*e)[0].activations_plain);
}

}  // namespace
}  // namespace dstrain::pipe
