// Failures on the NVMe swap path (docs/offload.md, "Failures"), injected below the swap engine
// (FaultInjectionQueue): a short read or write is finished and changes nothing; EIO fails the step
// with the swap file and the offset, ENOSPC likewise as kResourceExhausted; the checkpoint taken
// before the failure is intact, and the run resumed from it takes the uninterrupted run's steps
// bitwise (what the service's restart does, docs/service.md).
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_macros.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"
#include "worker/env/env.h"
#include "worker/model/gpt.h"
#include "worker/offload/fault_injection_queue.h"

namespace dstrain::engine {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::AllOf;
using testing::Batch;
using ::testing::HasSubstr;
using testing::SmallGptSpec;

constexpr int kSteps = 20;

std::string SwapRoot() { return testing::TestDir("nvme_faults"); }

config::JobSpec Spec(bool offload) {
  std::string zero = R"(, "sub_group_size": 800)";
  if (offload) {
    zero += absl::StrFormat(
        R"(, "offload_optimizer": {"device": "nvme", "nvme_path": "%s", "pipeline_read": true,
                                   "pipeline_write": true})",
        SwapRoot());
  }
  return SmallGptSpec(1, 2, 2, 0.5, zero, kSteps, R"(, "bf16": {"enabled": true})");
}

// One rank's engine whose swap engine's queues go through `plan`.
struct Rank {
  testing::CpuDevice dev;
  std::unique_ptr<Engine> engine;
};

absl::StatusOr<std::unique_ptr<Rank>> Start(const config::JobSpec& spec,
                                            std::shared_ptr<offload::FaultPlan> plan) {
  auto r = std::make_unique<Rank>();
  zero::OffloadContext context;
  context.job = "faults";
  context.make_queue = [plan](int depth) -> absl::StatusOr<std::unique_ptr<offload::IoQueue>> {
    DT_ASSIGN_OR_RETURN(auto base, offload::NewUringQueue(depth));
    return std::unique_ptr<offload::IoQueue>(
        new offload::FaultInjectionQueue(std::move(base), plan));
  };
  DT_ASSIGN_OR_RETURN(auto gpt, model::Gpt::Create(testing::ModelShape(spec), &r->dev.ops));
  DT_ASSIGN_OR_RETURN(r->engine, Engine::Initialize(std::move(gpt), spec, nullptr, {}, context));
  return r;
}

// Steps [first, last) of rank 0; the losses of the steps taken.
absl::StatusOr<std::vector<double>> Steps(Engine& e, const config::JobSpec& spec, int first,
                                          int last) {
  return testing::TrainSteps(e, spec, 0, first, last);
}

TEST(OffloadFaultTest, ShortTransfersChangeNothingErrorsFailTheStepAndResumeIsExact) {
  // The uninterrupted run, state in memory.
  const config::JobSpec memory = Spec(false), nvme = Spec(true);
  std::vector<double> want;
  std::vector<float> want_params;
  {
    auto r = Start(memory, std::make_shared<offload::FaultPlan>());
    ASSERT_THAT(r, IsOk());
    auto losses = Steps(*(*r)->engine, memory, 0, kSteps);
    ASSERT_THAT(losses, IsOk());
    want = *losses;
    auto params = (*r)->engine->GatherParams();
    ASSERT_THAT(params, IsOk());
    want_params = *params;
  }

  for (const auto& [error, code] : {std::pair{EIO, absl::StatusCode::kInternal},
                                    std::pair{ENOSPC, absl::StatusCode::kResourceExhausted}}) {
    SCOPED_TRACE(std::strerror(error));
    // Half of the run with short reads and writes throughout; a checkpoint at step 10.
    auto plan = std::make_shared<offload::FaultPlan>();
    plan->Add({offload::IoFault::Kind::kShort, /*write=*/false, 0, 0, /*times=*/50});
    plan->Add({offload::IoFault::Kind::kShort, /*write=*/true, 0, 0, /*times=*/50});
    auto r = Start(nvme, plan);
    ASSERT_THAT(r, IsOk());
    Engine& e = *(*r)->engine;
    auto head = Steps(e, nvme, 0, kSteps / 2);
    ASSERT_THAT(head, IsOk());
    EXPECT_GE(plan->injected(), 20) << "the short transfers must have happened";
    EXPECT_EQ(*head, std::vector<double>(want.begin(), want.begin() + kSteps / 2));
    auto saved = e.SaveState();
    ASSERT_THAT(saved, IsOk());

    // The failure: the next update's I/O past the first window meets the error.
    const bool write = error == ENOSPC;
    plan->Add({offload::IoFault::Kind::kError, write, /*min_offset=*/4096, error, 1});
    auto failed = Steps(e, nvme, kSteps / 2, kSteps / 2 + 1);
    EXPECT_THAT(failed.status(),
                StatusIs(code, AllOf(HasSubstr("/dstrain-faults/rank0/optimizer.swp: "),
                                     HasSubstr(write ? "write at offset" : "read at offset"),
                                     HasSubstr(std::strerror(error)))));
    (*r).reset();  // the failed trainer exits; its swap files go with it

    // Resume from the checkpoint (with more short transfers): bitwise the uninterrupted steps.
    auto resumed = Start(nvme, plan);
    ASSERT_THAT(resumed, IsOk());
    Engine& again = *(*resumed)->engine;
    env::StringSource source(*saved);
    ASSERT_THAT(again.LoadState(source), IsOk());
    ASSERT_THAT(again.FinishLoad(), IsOk());
    auto tail = Steps(again, nvme, kSteps / 2, kSteps);
    ASSERT_THAT(tail, IsOk());
    EXPECT_EQ(*tail, std::vector<double>(want.begin() + kSteps / 2, want.end()));
    auto params = again.GatherParams();
    ASSERT_THAT(params, IsOk());
    EXPECT_EQ(*params, want_params);
  }
}

}  // namespace
}  // namespace dstrain::engine
