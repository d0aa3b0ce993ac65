// Checkpoints across devices: a CUDA engine's state loads into a CPU engine and the reverse, and
// the state saved again is the same bytes (the stored state is the fp32 weights — master weights
// under mixed precision — and Adam's moments, which a load copies without arithmetic). Then the
// CPU engine trains on from it. On a GPU and on the CUDA simulator.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/device/cuda/cuda_ops.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"

namespace dstrain::engine {
namespace {

using ::dstrain::testing::IsOk;
using testing::Batch;
using testing::SmallGptSpec;

std::unique_ptr<Engine> Make(const config::JobSpec& spec, device::Ops* ops) {
  auto e = Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), ops), spec);
  EXPECT_THAT(e, IsOk());
  return e.ok() ? std::move(*e) : nullptr;
}

void TrainSteps(Engine& e, const config::JobSpec& spec, int first, int last) {
  for (int step = first; step < last; ++step) {
    for (int m = 0; m < spec.gradient_accumulation_steps; ++m) {
      const auto [x, y] = Batch(spec, step, 0, m);
      ASSERT_THAT(e.Forward(x.data(), y.data()), IsOk());
      ASSERT_THAT(e.Backward(), IsOk());
      ASSERT_THAT(e.Step(), IsOk());
    }
  }
}

class CudaCheckpointTest : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(CudaCheckpointTest, StateMovesBetweenDevicesBitForBit) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto [stage, bf16] = GetParam();
  const config::JobSpec spec =
      SmallGptSpec(1, stage, 2, 0.5, "", 6, bf16 ? R"(, "bf16": {"enabled": true})" : "");
  auto gpu_ops = device::CudaOps::Create({});
  ASSERT_THAT(gpu_ops, IsOk());
  tensor::CpuAllocator alloc;
  device::CpuOps cpu_ops(&alloc);

  // GPU → CPU.
  auto gpu = Make(spec, gpu_ops->get());
  TrainSteps(*gpu, spec, 0, 3);
  ASSERT_OK_AND_ASSIGN(const std::string from_gpu, gpu->SaveState());
  auto cpu = Make(spec, &cpu_ops);
  ASSERT_THAT(cpu->LoadState(from_gpu), IsOk());
  ASSERT_OK_AND_ASSIGN(const std::string again_on_cpu, cpu->SaveState());
  EXPECT_TRUE(again_on_cpu == from_gpu) << "the CPU engine holds what the GPU engine saved";
  EXPECT_EQ(cpu->global_steps(), 3);

  // CPU → GPU, after the CPU trained on.
  TrainSteps(*cpu, spec, 3, 5);
  ASSERT_OK_AND_ASSIGN(const std::string from_cpu, cpu->SaveState());
  auto gpu2 = Make(spec, gpu_ops->get());
  ASSERT_THAT(gpu2->LoadState(from_cpu), IsOk());
  ASSERT_OK_AND_ASSIGN(const std::string again_on_gpu, gpu2->SaveState());
  EXPECT_TRUE(again_on_gpu == from_cpu) << "the GPU engine holds what the CPU engine saved";
  ASSERT_OK_AND_ASSIGN(const std::vector<float> p_cpu, cpu->GatherParams());
  ASSERT_OK_AND_ASSIGN(const std::vector<float> p_gpu, gpu2->GatherParams());
  EXPECT_EQ(p_cpu, p_gpu);
}

INSTANTIATE_TEST_SUITE_P(Stages, CudaCheckpointTest,
                         ::testing::Combine(::testing::Values(0, 1, 2, 3), ::testing::Bool()),
                         [](const auto& info) {
                           return absl::StrCat("stage", std::get<0>(info.param),
                                               std::get<1>(info.param) ? "_bf16" : "_fp32");
                         });

}  // namespace
}  // namespace dstrain::engine
