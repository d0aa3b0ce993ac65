// ZeRO-Offload on a GPU rank (zero_optimization.offload_optimizer.device "cpu": the state in host
// memory, the update on the CPU) and ZeRO-Infinity's NVMe offload on a GPU rank, against the
// same job with the state on the device: 20 steps at stages 1-3, fp32 and bf16, one rank, and two
// ranks with gradient accumulation and clipping. The host update runs the CPU's AdamW, whose
// operations and fused multiply-adds sit where the GPU kernel's do (kernels/adamw), on the
// gradients the device reduced, unscaled and clipped: losses and final weights are bitwise equal.
// Also: checkpoints move between offloaded and device-resident runs bitwise, the host memory is
// accounted, pin_memory's state is page-locked, and what is not built yet is refused by name. On a
// GPU and on the CUDA simulator.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "worker/device/cuda/cuda_ops.h"
#include "worker/device/cuda/host_staged_communicator.h"
#include "worker/device/cuda/pinned_host_allocator.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"
#include "worker/env/env.h"

namespace dstrain::engine {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using testing::Batch;
using ::testing::HasSubstr;
using testing::RunOnRanks;
using testing::SmallGptSpec;

constexpr int kSteps = 20;

std::string SwapRoot() { return testing::TestDir("nvme"); }

// `offload`: the offload_optimizer block's keys (empty: none).
config::JobSpec Spec(int world, int stage, int gas, double clip, bool bf16,
                     const std::string& offload) {
  std::string zero = R"(, "sub_group_size": 700, "reduce_bucket_size": 3000)";
  if (!offload.empty()) absl::StrAppend(&zero, R"(, "offload_optimizer": {)", offload, "}");
  return SmallGptSpec(world, stage, gas, clip, zero, kSteps,
                      bf16 ? R"(, "bf16": {"enabled": true})" : "");
}

struct TrainResult {
  std::vector<double> losses;
  std::vector<float> params;
  std::vector<std::string> saved;  // each rank's state after its last step
  int64_t device_optimizer_state = 0, host_optimizer_state = 0;  // rank 0's, after training
  config::OffloadDevice home = config::OffloadDevice::kNone;
};

TrainResult Train(const config::JobSpec& spec, int first = 0, int last = kSteps,
                  const std::vector<std::string>* load = nullptr) {
  const int world = spec.data_parallel_size;
  TrainResult run;
  run.saved.resize(world);
  std::mutex mu;
  RunOnRanks(world, [&](int r, comm::Communicator* fake) {
    auto created = device::CudaOps::Create({});
    ASSERT_THAT(created, IsOk());
    std::unique_ptr<device::Ops> ops = std::move(*created);
    std::unique_ptr<comm::Communicator> staged;
    comm::Communicator* dp = nullptr;
    if (world > 1) {
      staged = std::make_unique<device::HostStagedCommunicator>(fake);
      dp = staged.get();
    }
    zero::OffloadContext context;  // the host memory is the ZeroState's own (pinned or not)
    context.job = absl::StrCat("cuda-offload-", ::testing::UnitTest::GetInstance()->random_seed());
    auto e = Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), ops.get()), spec, dp,
                                {}, context);
    ASSERT_THAT(e, IsOk());
    if (load != nullptr) {
      env::StringSource source((*load)[r]);
      ASSERT_THAT((*e)->LoadState(source), IsOk());
      ASSERT_THAT((*e)->FinishLoad(), IsOk());
    }
    for (int step = first; step < last; ++step) {
      for (int m = 0; m < spec.gradient_accumulation_steps; ++m) {
        const auto [x, y] = Batch(spec, step, r, m);
        ASSERT_THAT((*e)->Forward(x.data(), y.data()), IsOk());
        ASSERT_THAT((*e)->Backward(), IsOk());
        auto s = (*e)->Step();
        ASSERT_THAT(s, IsOk());
        if (s->has_value() && r == 0) run.losses.push_back((**s).loss);
      }
    }
    auto state = (*e)->SaveState();
    ASSERT_THAT(state, IsOk());
    auto params = (*e)->GatherParams(r == 0);
    ASSERT_THAT(params, IsOk());
    std::lock_guard<std::mutex> lock(mu);
    run.saved[r] = *std::move(state);
    if (r == 0) {
      run.params = *std::move(params);
      const int state_category = static_cast<int>(tensor::MemoryCategory::kOptimizerState);
      run.device_optimizer_state = ops->allocator()->Stats().current[state_category];
      if (const tensor::Allocator* host = (*e)->zero().host_allocator(); host != nullptr) {
        run.host_optimizer_state = host->Stats().current[state_category];
      }
      run.home = (*e)->zero().optimizer_home();
    }
  });
  return run;
}

class CudaOffloadTest : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(CudaOffloadTest, HostAndNvmeMatchTheDeviceBitwise) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto [stage, bf16] = GetParam();
  // One rank without accumulation or clipping, two ranks with both (the simulator is slow).
  for (const auto& [world, gas, clip] : {std::tuple<int, int, double>{1, 1, 0.0}, {2, 2, 0.5}}) {
    {
      const TrainResult want = Train(Spec(world, stage, gas, clip, bf16, ""));
      ASSERT_EQ(want.losses.size(), static_cast<size_t>(kSteps));
      EXPECT_EQ(want.host_optimizer_state, 0);
      // pin_memory: the staging and the state page-locked, the copies queued behind the host's
      // back (the simulator performs them only when waited for, so a missing wait shows).
      for (const std::string& offload :
           {std::string(R"("device": "cpu")"),
            std::string(R"("device": "cpu", "pin_memory": true)"),
            absl::StrFormat(R"("device": "nvme", "nvme_path": "%s", "pipeline_read": true,
                               "pipeline_write": true, "buffer_count": 3, "pin_memory": true)",
                            SwapRoot())}) {
        const std::string what = absl::StrFormat("world %d stage %d %s gas %d clip %g: %s", world,
                                                 stage, bf16 ? "bf16" : "fp32", gas, clip, offload);
        const TrainResult got = Train(Spec(world, stage, gas, clip, bf16, offload));
        EXPECT_NE(got.home, config::OffloadDevice::kNone) << what;
        EXPECT_EQ(got.losses, want.losses) << what;
        EXPECT_EQ(got.params, want.params) << what;
        EXPECT_EQ(got.saved, want.saved) << what << ": the checkpoint state";
        // The state left the device: none of it there, all of it (cpu) or the swap's buffers
        // (nvme) in host memory.
        EXPECT_EQ(got.device_optimizer_state, 0) << what;
        EXPECT_GT(got.host_optimizer_state, 0) << what;
        if (got.home == config::OffloadDevice::kCpu) {
          EXPECT_EQ(got.host_optimizer_state, want.device_optimizer_state) << what;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(StagesAndPrecisions, CudaOffloadTest,
                         ::testing::Combine(::testing::Values(1, 2, 3), ::testing::Bool()),
                         [](const auto& info) {
                           return absl::StrCat("stage", std::get<0>(info.param),
                                               std::get<1>(info.param) ? "_bf16" : "_fp32");
                         });

// A checkpoint of a host-offloaded run resumes on the device and the reverse, taking the
// uninterrupted run's steps bitwise.
TEST(CudaOffloadCheckpointTest, MovesBetweenHostAndDeviceBitwise) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (const bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16" : "fp32");
    const config::JobSpec device = Spec(2, 2, 2, 0.5, bf16, "");
    const config::JobSpec host = Spec(2, 2, 2, 0.5, bf16, R"("device": "cpu")");
    const TrainResult whole = Train(device);
    for (const auto& [first, second] :
         std::vector<std::pair<config::JobSpec, config::JobSpec>>{{host, device}, {device, host}}) {
      const TrainResult head = Train(first, 0, kSteps / 2);
      const TrainResult tail = Train(second, kSteps / 2, kSteps, &head.saved);
      std::vector<double> losses = head.losses;
      losses.insert(losses.end(), tail.losses.begin(), tail.losses.end());
      EXPECT_EQ(losses, whole.losses);
      EXPECT_EQ(tail.params, whole.params);
    }
  }
}

TEST(CudaOffloadConfigTest, RefusesWhatIsNotBuiltYet) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const config::JobSpec spec = Spec(1, 2, 1, 0.0, true, R"("device": "cpu", "ratio": 0.5)");
  auto ops = device::CudaOps::Create({});
  ASSERT_THAT(ops, IsOk());
  EXPECT_THAT(
      Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), ops->get()), spec).status(),
      StatusIs(absl::StatusCode::kUnimplemented,
               HasSubstr("zero_optimization.offload_optimizer.ratio")));
}

// pin_memory: the state and the staging are page-locked (the device's PinnedHostAllocator holds
// them: the allocator handed out is not a plain CpuAllocator), and a budget on page-locked memory
// is an error naming the category, not a crash.
TEST(CudaOffloadConfigTest, PinnedStateIsPageLocked) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const config::JobSpec spec = Spec(1, 2, 1, 0.0, true, R"("device": "cpu", "pin_memory": true)");
  auto ops = device::CudaOps::Create({});
  ASSERT_THAT(ops, IsOk());
  auto e = Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), ops->get()), spec);
  ASSERT_THAT(e, IsOk());
  const tensor::Allocator* host = (*e)->zero().host_allocator();
  ASSERT_NE(host, nullptr);
  EXPECT_NE(dynamic_cast<const device::PinnedHostAllocator*>(host), nullptr);
  EXPECT_GT(host->Stats().current[static_cast<int>(tensor::MemoryCategory::kOptimizerState)], 0);

  auto pinned = (*ops)->NewPinnedHostAllocator(1000);
  ASSERT_THAT(pinned, IsOk());
  EXPECT_THAT((*pinned)->Allocate(4000, tensor::MemoryCategory::kOptimizerState).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("optimizer_state")));
}

}  // namespace
}  // namespace dstrain::engine
