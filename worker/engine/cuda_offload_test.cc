// ZeRO-Offload on a GPU rank (zero_optimization.offload_optimizer.device "cpu": the state in host
// memory, the update on the CPU) and ZeRO-Infinity's NVMe offload on a GPU rank, against the
// same job with the state on the device: 20 steps at stages 1-3, fp32 and bf16, one rank, and two
// ranks with gradient accumulation and clipping. The host update runs the CPU's AdamW, whose
// operations and fused multiply-adds sit where the GPU kernel's do (kernels/adamw), on the
// gradients the device reduced, unscaling and clipping them by the factor the device computed:
// losses and final weights are bitwise equal.
// Also: checkpoints move between offloaded and device-resident runs bitwise, the host memory is
// accounted (and the memory estimate gives the same figures), pin_memory's state is page-locked,
// and a partial offload (ratio) keeps DeepSpeed's first sub-groups on the device. And stage 3's
// parameter offload (offload_param "cpu"), alone and beside the optimizer's. On a GPU and on the
// CUDA simulator.
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "worker/device/cuda/cuda_ops.h"
#include "worker/device/cuda/host_staged_communicator.h"
#include "worker/device/cuda/pinned_host_allocator.h"
#include "worker/device/sizing.h"
#include "worker/engine/checkpoint_io.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"
#include "worker/env/env.h"
#include "worker/model/param_layout.h"
#include "worker/zero/estimate.h"
#include "worker/zero/precision.h"

namespace dstrain::engine {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using testing::Batch;
using ::testing::Contains;
using ::testing::HasSubstr;
using testing::RunOnRanks;
using testing::SmallGptSpec;

constexpr int kSteps = 20;

std::string SwapRoot() { return testing::TestDir("nvme"); }

// `offload`, `offload_param`: the offload_optimizer and offload_param blocks' keys (empty: none).
config::JobSpec Spec(int world, int stage, int gas, double clip, bool bf16,
                     const std::string& offload, const std::string& offload_param = "") {
  std::string zero = R"(, "sub_group_size": 700, "reduce_bucket_size": 3000)";
  if (!offload.empty()) absl::StrAppend(&zero, R"(, "offload_optimizer": {)", offload, "}");
  if (!offload_param.empty()) {
    absl::StrAppend(&zero, R"(, "offload_param": {)", offload_param, "}");
  }
  return SmallGptSpec(world, stage, gas, clip, zero, kSteps,
                      bf16 ? R"(, "bf16": {"enabled": true})" : "");
}

struct TrainResult {
  std::vector<double> losses;
  std::vector<float> params;
  std::vector<std::string> saved;  // each rank's state after its last step
  int64_t device_optimizer_state = 0, host_optimizer_state = 0;  // rank 0's, after training
  int64_t host_bytes = 0;     // rank 0's host allocator, every category
  int64_t device_params = 0;  // rank 0's device allocator, kParams
  config::OffloadDevice home = config::OffloadDevice::kNone;
  zero::MemoryEstimate estimate;  // the memory estimate for rank 0 (zero::EstimateMemory)
};

// A run through checkpoint_io's files: load `load_tag` from `root` first (resharding where the
// world differs), save `save_tag` after the last step (null: neither).
struct CheckpointFiles {
  std::string root;
  const char* load_tag = nullptr;
  const char* save_tag = nullptr;
};

// Trains steps [first, last) of `spec` on every rank, from `load[r]` (rank r's saved state) or
// `files` when given.
TrainResult Train(const config::JobSpec& spec, int first = 0, int last = kSteps,
                  const std::vector<std::string>* load = nullptr,
                  const CheckpointFiles* files = nullptr) {
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
    // The checkpoint's agreement between ranks runs over the device's communicator, as the
    // trainer's does.
    const CheckpointOptions options{env::PosixEnv::Default(), files ? files->root : "",
                                    /*keep_last=*/2, comm::CommOptions{}};
    if (files != nullptr && files->load_tag != nullptr) {
      ASSERT_THAT(LoadCheckpoint(**e, dp, options, files->load_tag), IsOk());
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
    if (files != nullptr && files->save_tag != nullptr) {
      ASSERT_THAT(SaveCheckpoint(**e, dp, options, files->save_tag, "rank state"), IsOk());
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
      run.device_params =
          ops->allocator()->Stats().current[static_cast<int>(tensor::MemoryCategory::kParams)];
      if (const tensor::Allocator* host = (*e)->zero().host_allocator(); host != nullptr) {
        run.host_optimizer_state = host->Stats().current[state_category];
        for (const int64_t bytes : host->Stats().current) run.host_bytes += bytes;
      }
      run.home = (*e)->zero().optimizer_home();
      auto layout = model::ParamLayout::ForGpt(testing::ModelShape(spec));
      ASSERT_THAT(layout, IsOk());
      run.estimate =
          zero::EstimateMemory(*layout, testing::ModelShape(spec), spec.zero, spec.zero.stage,
                               world, static_cast<int>(spec.train_micro_batch_size_per_gpu),
                               spec.data.seq_len, *ops, zero::StatePrecision::Of(spec));
      if (!ops->host_accessible()) {
        // `dstrain estimate` sizes a GPU rank without a GPU (device::CudaSizing): the same.
        const zero::MemoryEstimate sized = zero::EstimateMemory(
            *layout, testing::ModelShape(spec), spec.zero, spec.zero.stage, world,
            static_cast<int>(spec.train_micro_batch_size_per_gpu), spec.data.seq_len,
            device::CudaSizing(), zero::StatePrecision::Of(spec));
        EXPECT_EQ(sized.params, run.estimate.params);
        EXPECT_EQ(sized.grads, run.estimate.grads);
        EXPECT_EQ(sized.optimizer_state, run.estimate.optimizer_state);
        EXPECT_EQ(sized.activations, run.estimate.activations);
        EXPECT_EQ(sized.comm_buffers_peak, run.estimate.comm_buffers_peak);
        EXPECT_EQ(sized.gathered_params_peak, run.estimate.gathered_params_peak);
        EXPECT_EQ(sized.host_bytes, run.estimate.host_bytes);
        EXPECT_EQ(sized.nvme_bytes, run.estimate.nvme_bytes);
      }
    }
  });
  return run;
}

// Steps [0, kSteps / 2) of one spec, then the rest of the other's from that checkpoint, both ways
// round: each must take `whole`'s steps bitwise (losses, final weights, the state saved at the
// end).
void ExpectResumesBitwise(const config::JobSpec& a, const config::JobSpec& b,
                          const TrainResult& whole) {
  for (const auto& [first, second] :
       std::vector<std::pair<config::JobSpec, config::JobSpec>>{{a, b}, {b, a}}) {
    const TrainResult head = Train(first, 0, kSteps / 2);
    const TrainResult tail = Train(second, kSteps / 2, kSteps, &head.saved);
    std::vector<double> losses = head.losses;
    losses.insert(losses.end(), tail.losses.begin(), tail.losses.end());
    EXPECT_EQ(losses, whole.losses);
    EXPECT_EQ(tail.params, whole.params);
    EXPECT_EQ(tail.saved, whole.saved);
  }
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
      EXPECT_EQ(want.estimate.optimizer_state, want.device_optimizer_state);
      EXPECT_EQ(want.estimate.host_bytes, 0);
      for (const std::string& offload :
           {std::string(R"("device": "cpu")"),
            std::string(R"("device": "cpu", "pin_memory": true)"),
            // DeepSpeed's partial offload: the first int(0.4 n) sub-groups stay on the device.
            std::string(R"("device": "cpu", "ratio": 0.6, "pin_memory": true)"),
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
        // The state left the device (a partial offload: some of it), all of it in host memory
        // (cpu) or the swap's buffers there (nvme); the memory estimate says so exactly.
        if (absl::StrContains(offload, "ratio")) {
          EXPECT_GT(got.device_optimizer_state, 0) << what;
          EXPECT_LT(got.device_optimizer_state, want.device_optimizer_state) << what;
        } else {
          EXPECT_EQ(got.device_optimizer_state, 0) << what;
        }
        EXPECT_GT(got.host_optimizer_state, 0) << what;
        if (got.home == config::OffloadDevice::kCpu) {
          EXPECT_EQ(got.host_optimizer_state + got.device_optimizer_state,
                    want.device_optimizer_state)
              << what;
        }
        EXPECT_EQ(got.estimate.optimizer_state, got.device_optimizer_state) << what;
        EXPECT_EQ(got.estimate.host_bytes, got.host_bytes) << what;
      }
    }
  }
}

// offload_param "cpu" (stage 3): the parameter partition in host memory, each gather copying its
// chunk to the device; alone (the update on the device, a window at a time through the device),
// beside a host-resident optimizer (updated in place on the host), and beside a partial one.
// offload_param "nvme": the partition in a swap file, each gather reading its chunk and copying
// it to the device; alone and beside a host-resident optimizer (updated in its staging slot).
class CudaParamOffloadTest : public ::testing::TestWithParam<bool> {};

TEST_P(CudaParamOffloadTest, MatchesTheDeviceBitwise) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const bool bf16 = GetParam();
  const std::string nvme = absl::StrFormat(
      R"("device": "nvme", "nvme_path": "%s", "buffer_count": 2)", testing::TestDir("param_nvme"));
  for (const auto& [world, gas, clip] : {std::tuple<int, int, double>{1, 1, 0.0}, {2, 2, 0.5}}) {
    const TrainResult want = Train(Spec(world, 3, gas, clip, bf16, ""));
    ASSERT_EQ(want.losses.size(), static_cast<size_t>(kSteps));
    ASSERT_GT(want.device_params, 0);
    for (const auto& [offload, param] : std::vector<std::pair<std::string, std::string>>{
             {"", R"("device": "cpu")"},
             {R"("device": "cpu")", R"("device": "cpu", "pin_memory": true)"},
             {R"("device": "cpu", "ratio": 0.6)", R"("device": "cpu")"},
             {"", nvme},
             {R"("device": "cpu", "pin_memory": true)", nvme}}) {
      const std::string what =
          absl::StrFormat("world %d %s gas %d clip %g: offload_optimizer {%s}, offload_param {%s}",
                          world, bf16 ? "bf16" : "fp32", gas, clip, offload, param);
      const TrainResult got = Train(Spec(world, 3, gas, clip, bf16, offload, param));
      EXPECT_EQ(got.losses, want.losses) << what;
      EXPECT_EQ(got.params, want.params) << what;
      EXPECT_EQ(got.saved, want.saved) << what << ": the checkpoint state";
      // No parameter partition on the device; the host holds it (and what the optimizer's
      // offload keeps), as the memory estimate says.
      EXPECT_EQ(got.device_params, 0) << what;
      EXPECT_EQ(got.estimate.params, 0) << what;
      // (On NVMe the host keeps only the swap's buffers, which for this tiny model's chunks
      // are a page each.)
      if (param != nvme) {
        EXPECT_GE(got.host_bytes, want.device_params) << what;
      }
      EXPECT_EQ(got.estimate.host_bytes, got.host_bytes) << what;
      EXPECT_EQ(got.estimate.optimizer_state, got.device_optimizer_state) << what;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaParamOffloadTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "bf16" : "fp32"; });

// A checkpoint with the parameters offloaded resumes without, and the reverse.
TEST(CudaParamOffloadCheckpointTest, CheckpointsMoveBetweenHostAndDeviceBitwise) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const config::JobSpec device = Spec(2, 3, 2, 0.5, true, "");
  const config::JobSpec host = Spec(2, 3, 2, 0.5, true, "", R"("device": "cpu")");
  ExpectResumesBitwise(host, device, Train(device));
}

// Resharding with the offloads on: a checkpoint of two ranks with the parameters and part of the
// optimizer state on the host loads into one rank range by range (BeginStoreOwned ..
// FinishStoreOwned), with the same offloads and without; both go on identically.
TEST(CudaParamOffloadCheckpointTest, ReshardsWithAndWithoutOffload) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::string root = testing::TestDir("reshard_offload");
  std::filesystem::remove_all(root);  // a test binary run by hand reuses /tmp
  const std::string offload = R"("device": "cpu", "ratio": 0.6)", param = R"("device": "cpu")";
  for (const bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16" : "fp32");
    const std::string dir = absl::StrCat(root, bf16 ? "/bf16" : "/fp32");
    const CheckpointFiles save{dir, nullptr, "saved"}, load{dir, "saved", nullptr};
    Train(Spec(2, 3, 1, 0.5, bf16, offload, param), 0, 3, nullptr, &save);
    const TrainResult with = Train(Spec(1, 3, 1, 0.5, bf16, offload, param), 3, 6, nullptr, &load);
    const TrainResult without = Train(Spec(1, 3, 1, 0.5, bf16, ""), 3, 6, nullptr, &load);
    ASSERT_EQ(with.losses.size(), 3u);
    EXPECT_EQ(with.losses, without.losses);
    EXPECT_EQ(with.params, without.params);
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
    ExpectResumesBitwise(host, device, Train(device));
  }
}

// ratio: DeepSpeed's rule, int((1 - ratio) * n) of the n sub-groups stay on the device. A ratio
// that offloads none of them leaves the whole state there (a note says so); a checkpoint of a
// partial offload loads into a full one and the reverse, bitwise.
TEST(CudaOffloadConfigTest, PartialOffloadFollowsTheSubGroupRule) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ops = device::CudaOps::Create({});
  ASSERT_THAT(ops, IsOk());
  const int state_category = static_cast<int>(tensor::MemoryCategory::kOptimizerState);
  auto device_state = [&](const std::string& offload, std::vector<std::string>* log) -> int64_t {
    const config::JobSpec spec = Spec(1, 3, 1, 0.0, false, offload);
    zero::OffloadContext context;
    context.log = [log](const std::string& line) { log->push_back(line); };
    const int64_t before = (*ops)->allocator()->Stats().current[state_category];
    auto e = Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), ops->get()), spec,
                                nullptr, {}, context);
    EXPECT_THAT(e, IsOk());
    return e.ok() ? (*ops)->allocator()->Stats().current[state_category] - before : -1;
  };
  std::vector<std::string> log;
  const int64_t all = device_state("", &log);
  ASSERT_GT(all, 0);
  // Stage 3 updates in one pass of sub_group_size 700 floats: n windows, the last one shorter.
  const config::JobSpec spec = Spec(1, 3, 1, 0.0, false, "");
  auto layout = model::ParamLayout::ForGpt(testing::ModelShape(spec));
  ASSERT_THAT(layout, IsOk());
  const int64_t owned = all / 8;  // fp32: m and v
  const int n = static_cast<int>((owned + 699) / 700);
  ASSERT_GT(n, 4);
  for (const double ratio : {0.25, 0.5, 0.9}) {
    log.clear();
    const int keep = static_cast<int>((1.0 - ratio) * n);
    EXPECT_EQ(device_state(absl::StrFormat(R"("device": "cpu", "ratio": %g)", ratio), &log),
              int64_t{8} * 700 * keep)
        << "ratio " << ratio;
    EXPECT_THAT(log, Contains(HasSubstr(absl::StrCat(n - keep, " of ", n, " sub-groups"))));
  }
  log.clear();
  EXPECT_EQ(device_state(R"("device": "cpu", "ratio": 0.0)", &log), all);
  EXPECT_THAT(log, Contains(HasSubstr("offloads none of them")));

  for (const bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16" : "fp32");
    const config::JobSpec partial = Spec(2, 3, 2, 0.5, bf16, R"("device": "cpu", "ratio": 0.5)");
    const config::JobSpec full = Spec(2, 3, 2, 0.5, bf16, R"("device": "cpu")");
    ExpectResumesBitwise(partial, full, Train(full));
  }
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
