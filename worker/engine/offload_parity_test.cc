// ZeRO-Infinity's optimizer offload to NVMe (zero_optimization.offload_optimizer.device "nvme")
// against the same job with the state in memory: the same losses and final weights, bitwise, over
// 20 steps of stages 1-3, fp32 and bf16, with gradient accumulation and clipping. The offloaded
// update runs the same elementwise kernel on the same sub-groups, only from swap buffers, so
// nothing may differ. Also: checkpoints move between the two bitwise, and a model whose optimizer
// state does not fit the allocator's budget trains with offload (docs/offload.md).
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_macros.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/config/config.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"
#include "worker/env/env.h"
#include "worker/model/gpt.h"
#include "worker/model/param_layout.h"
#include "worker/zero/estimate.h"
#include "worker/zero/precision.h"

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

// `offload`: extra keys of offload_optimizer (empty: no offload).
struct Job {
  int world = 2, stage = 1, gas = 2;
  double clip = 0.5;
  bool bf16 = false;
  std::string zero_extra;
  std::string offload;
};

config::JobSpec Spec(const Job& s, int steps = kSteps) {
  std::string zero = s.zero_extra;
  if (!s.offload.empty()) {
    zero += absl::StrFormat(R"(, "offload_optimizer": {"device": "nvme", "nvme_path": "%s" %s})",
                            SwapRoot(), s.offload);
  }
  return SmallGptSpec(s.world, s.stage, s.gas, s.clip, zero, steps,
                      s.bf16 ? R"(, "bf16": {"enabled": true})" : "");
}

struct Result {
  std::vector<double> losses;
  std::vector<float> params;
  int64_t swap_bytes = 0;
  int64_t optimizer_state_bytes = 0;  // rank 0's allocator, after training
  int64_t swap_file_size = 0;         // rank 0's swap file on disk (stat), after training
  zero::MemoryEstimate estimate;      // `dstrain estimate`'s figures for rank 0
};

// Trains steps [first, last) of `spec` on every rank; `load[r]`, when given, is rank r's saved
// state to resume from, and `save[r]` receives the state after the last step.
Result Train(const config::JobSpec& spec, int first = 0, int last = kSteps,
             const std::vector<std::string>* load = nullptr,
             std::vector<std::string>* save = nullptr) {
  const int world = spec.data_parallel_size;
  std::vector<Result> results(world);
  if (save != nullptr) save->assign(world, "");
  RunOnRanks(world, [&](int r, comm::Communicator* comm) {
    testing::CpuDevice dev;
    zero::OffloadContext context;
    context.job = absl::StrCat("parity-", ::testing::UnitTest::GetInstance()->random_seed());
    auto e = Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), &dev.ops), spec,
                                comm, {}, context);
    ASSERT_THAT(e, IsOk());
    auto losses =
        testing::ResumeTrainSave(**e, spec, r, first, last, load != nullptr ? &(*load)[r] : nullptr,
                                 save != nullptr ? &(*save)[r] : nullptr);
    ASSERT_THAT(losses, IsOk());
    results[r].losses = *std::move(losses);
    auto params = (*e)->GatherParams();
    ASSERT_THAT(params, IsOk());
    results[r].params = *std::move(params);
    results[r].swap_bytes = (*e)->zero().swap_file_bytes();
    results[r].optimizer_state_bytes =
        dev.Stats().current[static_cast<int>(tensor::MemoryCategory::kOptimizerState)];
    struct stat file;
    if (::stat(absl::StrCat(SwapRoot(), "/dstrain-", context.job, "/rank", r, "/optimizer.swp")
                   .c_str(),
               &file) == 0) {
      results[r].swap_file_size = file.st_size;
    }
    auto layout = model::ParamLayout::ForGpt(testing::ModelShape(spec));
    ASSERT_THAT(layout, IsOk());
    results[r].estimate =
        zero::EstimateMemory(*layout, testing::ModelShape(spec), spec.zero, spec.zero.stage, world,
                             static_cast<int>(spec.train_micro_batch_size_per_gpu),
                             spec.data.seq_len, dev.ops, zero::StatePrecision::Of(spec));
  });
  return results[0];
}

class OffloadParityTest : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(OffloadParityTest, NvmeMatchesMemoryBitwise) {
  const auto [stage, bf16] = GetParam();
  for (const int world : {1, 2}) {
    for (const auto& [gas, clip] : {std::pair<int, double>{1, 0.0}, {2, 0.5}}) {
      const std::string zero = R"(, "sub_group_size": 700, "reduce_bucket_size": 3000)";
      const Job base{world, stage, gas, clip, bf16, zero, ""};
      const Result want = Train(Spec(base));
      ASSERT_EQ(want.losses.size(), static_cast<size_t>(kSteps));
      EXPECT_EQ(want.swap_bytes, 0);
      // `dstrain estimate` is exact: the allocator's optimizer state, and no file.
      EXPECT_EQ(want.estimate.optimizer_state, want.optimizer_state_bytes);
      EXPECT_EQ(want.estimate.nvme_bytes, 0);
      // Several ways to move the same windows: each pipelining, one buffer, fast_init.
      for (const std::string& offload :
           {std::string(R"(, "pipeline_read": true, "pipeline_write": true)"),
            std::string(R"(, "buffer_count": 1, "fast_init": true)"),
            std::string(R"(, "pipeline_read": true, "buffer_count": 2)")}) {
        const std::string what = absl::StrFormat("world %d stage %d %s gas %d clip %g%s", world,
                                                 stage, bf16 ? "bf16" : "fp32", gas, clip, offload);
        Job s = base;
        s.offload = offload;
        const Result got = Train(Spec(s));
        EXPECT_GT(got.swap_bytes, 0) << what << ": the state must have been swapped";
        EXPECT_LT(got.optimizer_state_bytes, want.optimizer_state_bytes) << what;
        // The estimate: the swap's buffers in memory as the allocator counts them, the file
        // as it is on disk.
        EXPECT_EQ(got.estimate.optimizer_state, got.optimizer_state_bytes) << what;
        EXPECT_EQ(got.estimate.nvme_bytes, got.swap_bytes) << what;
        EXPECT_EQ(got.swap_file_size, got.swap_bytes) << what;
        EXPECT_EQ(got.losses, want.losses) << what;
        EXPECT_EQ(got.params, want.params) << what;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(StagesAndPrecisions, OffloadParityTest,
                         ::testing::Combine(::testing::Values(1, 2, 3), ::testing::Bool()),
                         [](const auto& info) {
                           return absl::StrCat("stage", std::get<0>(info.param),
                                               std::get<1>(info.param) ? "_bf16" : "_fp32");
                         });

// A checkpoint saved with the state on NVMe resumes without offload and the reverse, taking the
// uninterrupted run's steps bitwise.
TEST(OffloadCheckpointTest, MovesBetweenNvmeAndMemoryBitwise) {
  for (const bool bf16 : {false, true}) {
    for (const int stage : {1, 3}) {
      SCOPED_TRACE(absl::StrCat("stage ", stage, bf16 ? " bf16" : " fp32"));
      Job memory{2, stage, 2, 0.5, bf16, R"(, "sub_group_size": 900)", ""};
      Job nvme = memory;
      nvme.offload = R"(, "pipeline_read": true, "pipeline_write": true)";
      const Result whole = Train(Spec(memory));
      for (const auto& [first, second] :
           std::vector<std::pair<Job, Job>>{{nvme, memory}, {memory, nvme}}) {
        std::vector<std::string> saved;
        const Result head = Train(Spec(first), 0, kSteps / 2, nullptr, &saved);
        const Result tail = Train(Spec(second), kSteps / 2, kSteps, &saved);
        std::vector<double> losses = head.losses;
        losses.insert(losses.end(), tail.losses.begin(), tail.losses.end());
        EXPECT_EQ(losses, whole.losses);
        EXPECT_EQ(tail.params, whole.params);
      }
    }
  }
}

// The process's resident set (VmRSS of /proc/self/status) in bytes; 0 where it cannot be read.
int64_t ResidentBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  }
  return 0;
}

// The allocator's budget (a CpuAllocator limit; this test does not set a cgroup limit): a budget
// below what the in-memory optimizer state needs fails with kResourceExhausted, and the same job
// with the state on NVMe trains within it.
TEST(OffloadBudgetTest, TrainsWhereTheStateDoesNotFit) {
  Job s{1, 1, 1, 0.0, false, R"(, "sub_group_size": 1000)", ""};
  const config::JobSpec in_memory = Spec(s, 3);
  s.offload = R"(, "pipeline_read": true, "pipeline_write": true, "buffer_count": 3)";
  const config::JobSpec offloaded = Spec(s, 3);
  // The peak with the state in memory, and the state's bytes.
  int64_t peak = 0, state = 0;
  {
    testing::CpuDevice dev;
    auto e = Engine::Initialize(*model::Gpt::Create(testing::ModelShape(in_memory), &dev.ops),
                                in_memory);
    ASSERT_THAT(e, IsOk());
    for (int step = 0; step < 3; ++step) {
      const auto [x, y] = Batch(in_memory, step, 0, 0);
      ASSERT_THAT((*e)->Forward(x.data(), y.data()), IsOk());
      ASSERT_THAT((*e)->Backward(), IsOk());
      ASSERT_THAT((*e)->Step(), IsOk());
    }
    peak = dev.Stats().total_peak;
    state = dev.Stats().current[static_cast<int>(tensor::MemoryCategory::kOptimizerState)];
  }
  ASSERT_GT(state, peak / 4) << "the optimizer state must be a large share of the memory";
  const int64_t budget = peak - state / 2;
  auto run = [&](const config::JobSpec& spec, const char* name) -> absl::Status {
    tensor::CpuAllocator alloc(budget);
    int64_t resident = 0;  // measured after each step, reported beside the allocator's peak
    auto report = absl::MakeCleanup([&] {
      std::printf("%s: allocator peak %lld bytes (budget %lld), process resident up to %lld\n",
                  name, static_cast<long long>(alloc.Stats().total_peak),
                  static_cast<long long>(budget), static_cast<long long>(resident));
      ::testing::Test::RecordProperty(absl::StrCat(name, "_resident_bytes"), resident);
    });
    device::CpuOps ops(&alloc);
    DT_ASSIGN_OR_RETURN(auto gpt, model::Gpt::Create(testing::ModelShape(spec), &ops));
    DT_ASSIGN_OR_RETURN(auto e, Engine::Initialize(std::move(gpt), spec));
    for (int step = 0; step < 3; ++step) {
      const auto [x, y] = Batch(spec, step, 0, 0);
      DT_RETURN_IF_ERROR(e->Forward(x.data(), y.data()).status());
      DT_RETURN_IF_ERROR(e->Backward());
      DT_RETURN_IF_ERROR(e->Step().status());
      resident = std::max(resident, ResidentBytes());
    }
    EXPECT_LE(alloc.Stats().total_peak, budget);
    return absl::OkStatus();
  };
  EXPECT_THAT(run(in_memory, "in_memory"),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::_));
  EXPECT_THAT(run(offloaded, "nvme"), IsOk());
}

// A save streams the NVMe-held state out a sub-group at a time through the swap's own buffer:
// no chunk of it is larger than a sub-group's array, and the chunks are the whole state.
TEST(OffloadCheckpointTest, SaveStreamsTheSwappedStateInBoundedChunks) {
  constexpr int kSubGroup = 1000;
  const config::JobSpec spec =
      Spec({1, 2, 1, 0.0, true, absl::StrCat(R"(, "sub_group_size": )", kSubGroup), " "}, 2);
  testing::CpuDevice dev;
  auto e = Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), &dev.ops), spec);
  ASSERT_THAT(e, IsOk());
  for (int step = 0; step < 2; ++step) {
    const auto [x, y] = Batch(spec, step, 0, 0);
    ASSERT_THAT((*e)->Forward(x.data(), y.data()), IsOk());
    ASSERT_THAT((*e)->Backward(), IsOk());
    ASSERT_THAT((*e)->Step(), IsOk());
  }
  ASSERT_OK_AND_ASSIGN(const std::string whole, (*e)->SaveState());
  std::string head, streamed;
  ASSERT_OK_AND_ASSIGN(const env::ChunkSource chunks, (*e)->SaveStateChunks(&head));
  int count = 0;
  while (true) {
    ASSERT_OK_AND_ASSIGN(const absl::string_view chunk, chunks());
    if (chunk.empty()) break;
    // The first is the counters and the shard header; the rest are master weights, m and v.
    if (count++ > 0) {
      EXPECT_LE(chunk.size(), kSubGroup * sizeof(float));
    }
    streamed.append(chunk.data(), chunk.size());
  }
  EXPECT_GT(count, 3 * 10) << "expected many sub-groups";
  EXPECT_EQ(streamed, whole);
}

TEST(OffloadConfigTest, RefusesWhatCannotWork) {
  // nvme_path that does not exist: refused at start, naming it.
  const std::string missing = SwapRoot() + "/no/such/dir";
  const config::JobSpec spec = SmallGptSpec(
      1, 2, 1, 0.0,
      absl::StrFormat(R"(, "offload_optimizer": {"device": "nvme", "nvme_path": "%s"})", missing),
      1);
  testing::CpuDevice dev;
  EXPECT_THAT(
      Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), &dev.ops), spec).status(),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
}

// offload_param "cpu" on a CPU rank: its parameters are host memory already, so the job trains
// exactly as without it, and says so in a note.
TEST(OffloadConfigTest, ParamOffloadOnACpuRankIsANote) {
  const Job base{1, 3, 1, 0.0, true, "", ""};
  const Result want = Train(Spec(base, 3), 0, 3);
  const config::JobSpec spec = SmallGptSpec(1, 3, 1, 0.0, R"(, "offload_param": {"device": "cpu"})",
                                            3, R"(, "bf16": {"enabled": true})");
  ASSERT_EQ(spec.zero.offload_param.device, config::OffloadDevice::kCpu);
  EXPECT_EQ(Train(spec, 0, 3).losses, want.losses);
  std::vector<std::string> log;
  zero::OffloadContext context;
  context.log = [&log](const std::string& line) { log.push_back(line); };
  testing::CpuDevice dev;
  auto e = Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), &dev.ops), spec,
                              nullptr, {}, context);
  ASSERT_THAT(e, IsOk());
  EXPECT_FALSE((*e)->zero().params_on_host());
  EXPECT_THAT(log, ::testing::Contains(
                       HasSubstr("offload_param.device \"cpu\": this rank computes on the CPU")));
}

}  // namespace
}  // namespace dstrain::engine
