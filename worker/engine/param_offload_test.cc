// ZeRO-Infinity's parameter offload to NVMe (zero_optimization.offload_param.device "nvme", stage
// 3) on the CPU engine with real files, against the same job with its parameters in memory: the
// same losses and final weights, bitwise, over 20 steps, fp32 and bf16, one and two ranks, with
// gradient accumulation and clipping, alone and beside the optimizer state on NVMe. The gathers
// copy the same bytes and the update is the same elementwise kernel, so nothing may differ. Also:
// `dstrain estimate`'s figures against the allocator and the files, checkpoints moving both ways,
// an allocator budget the parameters and state do not fit, and failures on the parameters' I/O
// (docs/offload.md, "Parameters on NVMe").
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_macros.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/config/config.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"
#include "worker/env/byte_source.h"
#include "worker/model/gpt.h"
#include "worker/model/param_layout.h"
#include "worker/offload/fault_injection_queue.h"
#include "worker/offload/io_queue.h"
#include "worker/zero/estimate.h"
#include "worker/zero/precision.h"

namespace dstrain::engine {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::AllOf;
using testing::Batch;
using ::testing::HasSubstr;
using testing::RunOnRanks;
using testing::SmallGptSpec;

constexpr int kSteps = 20;

std::string ParamRoot() { return testing::TestDir("param-nvme"); }
std::string StateRoot() { return testing::TestDir("state-nvme"); }

// Where each offload goes; empty: not offloaded.
struct Offload {
  std::string params;      // offload_param's extra keys after nvme_path
  std::string optimizer;   // offload_optimizer's
  bool same_path = false;  // both under one nvme_path (one directory holds both files)
  bool params_on() const { return !params.empty(); }
};

config::JobSpec Spec(int world, int gas, double clip, bool bf16, const Offload& o,
                     int steps = kSteps, const std::string& zero_extra = "") {
  // Windows and buckets that do not line up with the units, so ranges start inside blocks.
  std::string zero = R"(, "sub_group_size": 700, "reduce_bucket_size": 3000)" + zero_extra;
  if (o.params_on()) {
    zero += absl::StrFormat(R"(, "offload_param": {"device": "nvme", "nvme_path": "%s" %s})",
                            ParamRoot(), o.params == " " ? "" : o.params);
  }
  if (!o.optimizer.empty()) {
    zero += absl::StrFormat(R"(, "offload_optimizer": {"device": "nvme", "nvme_path": "%s" %s})",
                            o.same_path ? ParamRoot() : StateRoot(),
                            o.optimizer == " " ? "" : o.optimizer);
  }
  return SmallGptSpec(world, 3, gas, clip, zero, steps,
                      bf16 ? R"(, "bf16": {"enabled": true})" : "");
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

struct Result {
  std::vector<double> losses;
  std::vector<float> params;
  int64_t params_bytes = 0;    // rank 0's allocator (kParams), after training
  int64_t param_file = 0;      // rank 0's params.swp on disk
  int64_t optimizer_file = 0;  // rank 0's optimizer.swp on disk
  int64_t swap_traffic = 0;    // bytes the parameter swap moved
  zero::MemoryEstimate estimate;
};

// Trains steps [first, last) on every rank; `load[r]` is rank r's state to resume from and
// `save[r]` receives it after the last step.
Result Train(const config::JobSpec& spec, const Offload& o, int first = 0, int last = kSteps,
             const std::vector<std::string>* load = nullptr,
             std::vector<std::string>* save = nullptr) {
  const int world = spec.data_parallel_size;
  std::vector<Result> results(world);
  if (save != nullptr) save->assign(world, "");
  RunOnRanks(world, [&](int r, comm::Communicator* comm) {
    testing::CpuDevice dev;
    zero::OffloadContext context;
    context.job = absl::StrCat("params-", ::testing::UnitTest::GetInstance()->random_seed());
    auto e = Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), &dev.ops), spec,
                                comm, {}, context);
    ASSERT_THAT(e, IsOk());
    EXPECT_EQ((*e)->zero().params_on_nvme(), o.params_on());
    auto losses =
        testing::ResumeTrainSave(**e, spec, r, first, last, load != nullptr ? &(*load)[r] : nullptr,
                                 save != nullptr ? &(*save)[r] : nullptr);
    ASSERT_THAT(losses, IsOk());
    results[r].losses = *std::move(losses);
    Result& out = results[r];
    out.swap_traffic = (*e)->zero().TakeParamSwapTraffic().bytes;
    out.params_bytes = dev.Stats().current[static_cast<int>(tensor::MemoryCategory::kParams)];
    const std::string dir = absl::StrCat("/dstrain-", context.job, "/rank", r);
    out.param_file = FileSize(ParamRoot() + dir + "/params.swp");
    out.optimizer_file =
        FileSize((o.same_path ? ParamRoot() : StateRoot()) + dir + "/optimizer.swp");
    auto params = (*e)->GatherParams();
    ASSERT_THAT(params, IsOk());
    out.params = *std::move(params);
    auto layout = model::ParamLayout::ForGpt(testing::ModelShape(spec));
    ASSERT_THAT(layout, IsOk());
    out.estimate = zero::EstimateMemory(*layout, testing::ModelShape(spec), spec.zero, 3, world,
                                        static_cast<int>(spec.train_micro_batch_size_per_gpu),
                                        spec.data.seq_len, dev.ops, zero::StatePrecision::Of(spec));
  });
  return results[0];
}

class ParamNvmeParityTest : public ::testing::TestWithParam<bool> {};  // bf16

TEST_P(ParamNvmeParityTest, MatchesMemoryBitwise) {
  const bool bf16 = GetParam();
  for (const int world : {1, 2}) {
    for (const auto& [gas, clip] : {std::pair<int, double>{1, 0.0}, {2, 0.5}}) {
      const Result want = Train(Spec(world, gas, clip, bf16, {}), {});
      ASSERT_EQ(want.losses.size(), static_cast<size_t>(kSteps));
      EXPECT_EQ(want.param_file, -1);
      // Parameters alone (one buffer: every gather waits for its read; five: reads run ahead),
      // and beside the optimizer state on NVMe, in one directory and in two.
      for (const Offload& o :
           std::vector<Offload>{{R"(, "buffer_count": 1)", "", false},
                                {" ", R"(, "pipeline_read": true, "pipeline_write": true)", true},
                                {R"(, "buffer_count": 2)", " ", false}}) {
        const std::string what =
            absl::StrFormat("world %d %s gas %d clip %g params{%s} state{%s}", world,
                            bf16 ? "bf16" : "fp32", gas, clip, o.params, o.optimizer);
        const Result got = Train(Spec(world, gas, clip, bf16, o), o);
        EXPECT_EQ(got.losses, want.losses) << what;
        EXPECT_EQ(got.params, want.params) << what;
        EXPECT_GT(got.swap_traffic, 0) << what << ": the parameters must have moved";
        // In memory only the swap's buffers (for this tiny model their page alignment makes
        // them larger than the parameters: ParamNvmeBudgetTest takes a larger one); `dstrain
        // estimate` gives them as the allocator counts them, and the files as they are on disk.
        EXPECT_EQ(got.estimate.params, got.params_bytes) << what;
        EXPECT_GT(got.param_file, 0) << what;
        EXPECT_EQ(got.estimate.nvme_bytes,
                  got.param_file + (o.optimizer.empty() ? 0 : got.optimizer_file))
            << what;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, ParamNvmeParityTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "bf16" : "fp32"; });

// A checkpoint saved with the parameters on NVMe resumes with them in memory and the reverse,
// taking the uninterrupted run's steps bitwise.
TEST(ParamNvmeCheckpointTest, MovesBetweenNvmeAndMemoryBitwise) {
  for (const bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16" : "fp32");
    const Offload none, nvme{" ", " ", true};
    const Result whole = Train(Spec(2, 2, 0.5, bf16, none), none);
    for (const auto& [first, second] :
         std::vector<std::pair<Offload, Offload>>{{nvme, none}, {none, nvme}}) {
      std::vector<std::string> saved;
      const Result head =
          Train(Spec(2, 2, 0.5, bf16, first), first, 0, kSteps / 2, nullptr, &saved);
      const Result tail = Train(Spec(2, 2, 0.5, bf16, second), second, kSteps / 2, kSteps, &saved);
      std::vector<double> losses = head.losses;
      losses.insert(losses.end(), tail.losses.begin(), tail.losses.end());
      EXPECT_EQ(losses, whole.losses);
      EXPECT_EQ(tail.params, whole.params);
    }
  }
}

// A model whose parameters outweigh the swap's buffers (two of its largest chunk and the range
// scratch, 1 MiB): 16 blocks of width 128, a vocabulary of 512.
config::JobSpec Larger(config::JobSpec spec) {
  spec.model.n_layer = 16;
  spec.model.n_embd = 128;
  spec.model.n_head = 4;
  spec.model.vocab_size = 512;
  spec.model.padded_vocab_size = 512;
  return spec;
}

// The allocator's budget (a CpuAllocator limit; this test sets no cgroup limit): below what the
// parameters and optimizer state need in memory the job fails with kResourceExhausted; with both
// on NVMe it trains within it. Gathered modules are dropped after use (no persistent ones), so
// what stays in memory is the swaps' buffers.
TEST(ParamNvmeBudgetTest, TrainsWhereTheModelStatesDoNotFit) {
  const Offload none, nvme{R"(, "buffer_count": 2)", R"(, "buffer_count": 2)", true};
  const std::string no_persistence = R"(, "stage3_param_persistence_threshold": 0)";
  const config::JobSpec in_memory = Larger(Spec(1, 1, 0.0, false, none, 3, no_persistence));
  const config::JobSpec offloaded = Larger(Spec(1, 1, 0.0, false, nvme, 3, no_persistence));
  int64_t peak = 0, states = 0, params = 0;
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
    params = dev.Stats().current[static_cast<int>(tensor::MemoryCategory::kParams)];
    states =
        dev.Stats().current[static_cast<int>(tensor::MemoryCategory::kOptimizerState)] + params;
  }
  const int64_t budget = peak - states / 2;
  int64_t offloaded_params = 0;
  auto run = [&](const config::JobSpec& spec) -> absl::Status {
    tensor::CpuAllocator alloc(budget);
    device::CpuOps ops(&alloc);
    DT_ASSIGN_OR_RETURN(auto gpt, model::Gpt::Create(testing::ModelShape(spec), &ops));
    DT_ASSIGN_OR_RETURN(auto e, Engine::Initialize(std::move(gpt), spec));
    for (int step = 0; step < 3; ++step) {
      const auto [x, y] = Batch(spec, step, 0, 0);
      DT_RETURN_IF_ERROR(e->Forward(x.data(), y.data()).status());
      DT_RETURN_IF_ERROR(e->Backward());
      DT_RETURN_IF_ERROR(e->Step().status());
    }
    EXPECT_LE(alloc.Stats().total_peak, budget);
    offloaded_params = alloc.Stats().current[static_cast<int>(tensor::MemoryCategory::kParams)];
    return absl::OkStatus();
  };
  EXPECT_THAT(run(in_memory), StatusIs(absl::StatusCode::kResourceExhausted, ::testing::_));
  EXPECT_THAT(run(offloaded), IsOk());
  EXPECT_LT(offloaded_params, params / 2) << "the parameters' buffers against the parameters";
}

TEST(ParamNvmeConfigTest, RefusesABufferSmallerThanAChunk) {
  const Offload o{R"(, "buffer_size": 100)", "", false};
  const config::JobSpec spec = Spec(1, 1, 0.0, false, o, 1);
  testing::CpuDevice dev;
  EXPECT_THAT(
      Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), &dev.ops), spec).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("zero_optimization.offload_param.buffer_size: 100 elements")));
}

// An I/O error on the parameters' file fails the step with the file, direction and offset; the
// job resumes from its checkpoint and takes the uninterrupted run's steps bitwise. Short
// transfers before it change nothing.
TEST(ParamNvmeFaultTest, AnIoErrorFailsTheStepAndResumeIsExact) {
  const Offload nvme{R"(, "buffer_count": 2)", "", false};
  const config::JobSpec spec = Spec(1, 2, 0.5, true, nvme);
  auto plan = std::make_shared<offload::FaultPlan>();
  auto start = [&](testing::CpuDevice& dev) {
    zero::OffloadContext context;
    context.job = "param-faults";
    context.make_queue = [plan](int depth) -> absl::StatusOr<std::unique_ptr<offload::IoQueue>> {
      return std::unique_ptr<offload::IoQueue>(
          new offload::FaultInjectionQueue(offload::NewSyncQueue(depth), plan));
    };
    return Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), &dev.ops), spec,
                              nullptr, {}, context);
  };
  auto steps = [&](Engine& e, int first, int last) {
    return testing::TrainSteps(e, spec, 0, first, last);
  };
  const Result want = Train(Spec(1, 2, 0.5, true, {}), {});
  for (const auto& [error, write] : {std::pair{EIO, false}, std::pair{ENOSPC, true}}) {
    SCOPED_TRACE(std::strerror(error));
    testing::CpuDevice dev;
    auto e = start(dev);
    ASSERT_THAT(e, IsOk());
    plan->Add({offload::IoFault::Kind::kShort, /*write=*/false, 0, 0, /*times=*/30});
    plan->Add({offload::IoFault::Kind::kShort, /*write=*/true, 0, 0, /*times=*/30});
    auto head = steps(**e, 0, kSteps / 2);
    ASSERT_THAT(head, IsOk());
    EXPECT_EQ(*head, std::vector<double>(want.losses.begin(), want.losses.begin() + kSteps / 2));
    auto saved = (*e)->SaveState();
    ASSERT_THAT(saved, IsOk());
    plan->Add({offload::IoFault::Kind::kError, write, /*min_offset=*/4096, error, 1});
    auto failed = steps(**e, kSteps / 2, kSteps / 2 + 1);
    EXPECT_THAT(failed.status(),
                StatusIs(write ? absl::StatusCode::kResourceExhausted : absl::StatusCode::kInternal,
                         AllOf(HasSubstr("/dstrain-param-faults/rank0/params.swp: "),
                               HasSubstr(write ? "write at offset" : "read at offset"),
                               HasSubstr(std::strerror(error)))));
    e->reset();  // the failed trainer exits; its files go with it

    testing::CpuDevice dev2;
    auto again = start(dev2);
    ASSERT_THAT(again, IsOk());
    env::StringSource source(*saved);
    ASSERT_THAT((*again)->LoadState(source), IsOk());
    ASSERT_THAT((*again)->FinishLoad(), IsOk());
    auto tail = steps(**again, kSteps / 2, kSteps);
    ASSERT_THAT(tail, IsOk());
    EXPECT_EQ(*tail, std::vector<double>(want.losses.begin() + kSteps / 2, want.losses.end()));
    auto params = (*again)->GatherParams();
    ASSERT_THAT(params, IsOk());
    EXPECT_EQ(*params, want.params);
  }
}

}  // namespace
}  // namespace dstrain::engine
