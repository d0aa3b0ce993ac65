// GPU discovery and selection: the flags, discovery in a child process that may fail, crash or
// hang without taking the agent along, the visible ids, and the CUDA runtime on this machine
// (whatever it has: no GPU and no driver must come back as an answer, never a crash).
#include "worker/agent/gpu_inventory.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::agent {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::vector<v1::GpuInfo> TwoGpus() {
  std::vector<v1::GpuInfo> gpus(2);
  for (int i = 0; i < 2; ++i) {
    gpus[i].set_index(i);
    gpus[i].set_name("NVIDIA H200");
    gpus[i].set_memory_bytes(int64_t{150} << 30);
    gpus[i].set_uuid("GPU-" + std::to_string(i));
  }
  return gpus;
}

TEST(GpuSelectionTest, Flags) {
  EXPECT_EQ(ParseGpuSelection("auto")->mode, GpuSelection::Mode::kAuto);
  EXPECT_EQ(ParseGpuSelection("none")->mode, GpuSelection::Mode::kNone);
  EXPECT_EQ(ParseGpuSelection("0")->mode, GpuSelection::Mode::kNone);
  ASSERT_THAT(ParseGpuSelection("3"), IsOk());
  EXPECT_EQ(ParseGpuSelection("3")->mode, GpuSelection::Mode::kAtMost);
  EXPECT_EQ(ParseGpuSelection("3")->at_most, 3);
  for (const char* bad : {"", "all", "-1", "1.5", "99999"}) {
    EXPECT_THAT(ParseGpuSelection(bad), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 HasSubstr("--gpus: expected auto, none")))
        << bad;
  }
}

TEST(GpuSelectionTest, FakeGpus) {
  auto gpus = ParseFakeGpus("FakeGPU A:1024,Vendor:Model X:2048");
  ASSERT_THAT(gpus, IsOk());
  ASSERT_EQ(gpus->size(), 2u);
  EXPECT_EQ((*gpus)[0].index(), 0);
  EXPECT_EQ((*gpus)[0].name(), "FakeGPU A");
  EXPECT_EQ((*gpus)[0].memory_bytes(), 1024);
  EXPECT_EQ((*gpus)[0].uuid(), "FAKE-GPU-0");
  EXPECT_EQ((*gpus)[1].index(), 1);
  EXPECT_EQ((*gpus)[1].name(), "Vendor:Model X");  // the last ':' separates the bytes
  for (const char* bad : {"", "A", ":5", "A:", "A:-1", "A:1,", "A:1,B", "A:1e9"}) {
    EXPECT_THAT(ParseFakeGpus(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--fake-gpus: '")))
        << bad;
  }
}

TEST(DiscoverGpusTest, TheProbesAnswerComesBack) {
  auto gpus = DiscoverGpus([] { return TwoGpus(); }, absl::Seconds(30));
  ASSERT_THAT(gpus, IsOk());
  ASSERT_EQ(gpus->size(), 2u);
  EXPECT_EQ((*gpus)[1].index(), 1);
  EXPECT_EQ((*gpus)[1].name(), "NVIDIA H200");
  EXPECT_EQ((*gpus)[1].memory_bytes(), int64_t{150} << 30);
  EXPECT_EQ((*gpus)[1].uuid(), "GPU-1");
  auto none = DiscoverGpus([] { return std::vector<v1::GpuInfo>(); }, absl::Seconds(30));
  ASSERT_THAT(none, IsOk());
  EXPECT_THAT(*none, IsEmpty());
}

TEST(DiscoverGpusTest, FailuresCrashesAndHangsAreErrorsNotOurs) {
  EXPECT_THAT(DiscoverGpus(
                  []() -> absl::StatusOr<std::vector<v1::GpuInfo>> {
                    return absl::UnavailableError("cudaGetDeviceCount: no CUDA-capable device");
                  },
                  absl::Seconds(30)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("no CUDA-capable device")));
  EXPECT_THAT(DiscoverGpus(
                  []() -> absl::StatusOr<std::vector<v1::GpuInfo>> {
                    // The default action, as a crashing CUDA runtime would get it: under
                    // --config=asan the sanitizer's own handler would turn it into SIGABRT.
                    signal(SIGSEGV, SIG_DFL);
                    raise(SIGSEGV);
                    return TwoGpus();
                  },
                  absl::Seconds(30)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("signal 11")));
  EXPECT_THAT(DiscoverGpus([]() -> absl::StatusOr<std::vector<v1::GpuInfo>> { _exit(3); },
                           absl::Seconds(30)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("no answer (exit status 3)")));
  const absl::Time start = absl::Now();
  EXPECT_THAT(DiscoverGpus(
                  []() -> absl::StatusOr<std::vector<v1::GpuInfo>> {
                    for (;;) pause();
                  },
                  absl::Milliseconds(300)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("did not finish within 300ms")));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(SelectGpusTest, FakeNoneAtMostAndFailedDiscovery) {
  int probes = 0;
  const GpuProbe two = [&probes] {
    ++probes;  // in the child: the parent's count never moves
    return TwoGpus();
  };
  std::string note;
  std::vector<v1::GpuInfo> got =
      SelectGpus(GpuSelection{}, std::nullopt, two, absl::Seconds(30), &note);
  EXPECT_EQ(got.size(), 2u);
  EXPECT_EQ(note,
            "2 GPU slot(s) of 2 GPU(s) from the CUDA runtime: 0: NVIDIA H200, 150.0 GiB; 1: "
            "NVIDIA H200, 150.0 GiB");

  got = SelectGpus(*ParseGpuSelection("1"), std::nullopt, two, absl::Seconds(30), &note);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].index(), 0);
  EXPECT_THAT(note, HasSubstr("1 GPU slot(s) of 2 GPU(s)"));

  got = SelectGpus(
      *ParseGpuSelection("none"), std::nullopt,
      []() -> absl::StatusOr<std::vector<v1::GpuInfo>> { std::abort(); }, absl::Seconds(30), &note);
  EXPECT_THAT(got, IsEmpty());
  EXPECT_EQ(note, "no GPU slots (--gpus none)");

  got = SelectGpus(*ParseGpuSelection("8"), ParseFakeGpus("Fake:4096,Fake:4096").value(), two,
                   absl::Seconds(30), &note);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].name(), "Fake");
  EXPECT_THAT(note, HasSubstr("from --fake-gpus (a test inventory)"));

  got = SelectGpus(
      GpuSelection{}, std::nullopt,
      []() -> absl::StatusOr<std::vector<v1::GpuInfo>> {
        return absl::UnavailableError("cudaGetDeviceCount: no driver");
      },
      absl::Seconds(30), &note);
  EXPECT_THAT(got, IsEmpty());
  EXPECT_EQ(note, "no GPU slots: cudaGetDeviceCount: no driver");
  EXPECT_EQ(probes, 0);
}

TEST(GpuSlotsTest, VisibleIdsFollowTheAgentsOwnList) {
  std::vector<GpuSlot> slots = ToGpuSlots(TwoGpus(), nullptr);
  ASSERT_EQ(slots.size(), 2u);
  EXPECT_EQ(slots[0].visible_id, "0");
  EXPECT_EQ(slots[1].visible_id, "1");
  EXPECT_EQ(slots[1].info.name(), "NVIDIA H200");
  // An agent that sees GPUs 2 and 3 of the machine as its 0 and 1.
  slots = ToGpuSlots(TwoGpus(), "2, GPU-abc");
  EXPECT_EQ(slots[0].visible_id, "2");
  EXPECT_EQ(slots[1].visible_id, "GPU-abc");
  // A shorter list (fake GPUs beyond it) falls back to the index.
  slots = ToGpuSlots(TwoGpus(), "5");
  EXPECT_EQ(slots[0].visible_id, "5");
  EXPECT_EQ(slots[1].visible_id, "1");
}

// Whatever this machine has. DSTRAIN_EXPECT_GPUS=N (on a machine with N GPUs) checks the count.
TEST(ProbeCudaRuntimeTest, AnswersOnAnyMachine) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<v1::GpuInfo>> found =
      DiscoverGpus(ProbeCudaRuntime, absl::Seconds(60));
  EXPECT_LT(absl::Now() - start, absl::Seconds(60));
  if (found.ok()) {
    for (size_t i = 0; i < found->size(); ++i) {
      const v1::GpuInfo& gpu = (*found)[i];
      EXPECT_EQ(gpu.index(), static_cast<int>(i));
      EXPECT_FALSE(gpu.name().empty());
      EXPECT_GT(gpu.memory_bytes(), 0);
      EXPECT_EQ(gpu.uuid().rfind("GPU-", 0), 0u) << gpu.uuid();
      std::printf("GPU %d: %s, %lld bytes, %s\n", gpu.index(), gpu.name().c_str(),
                  static_cast<long long>(gpu.memory_bytes()), gpu.uuid().c_str());
    }
  } else {
    std::printf("no GPUs: %s\n", std::string(found.status().message()).c_str());
  }
  int expected = 0;
  if (const char* e = std::getenv("DSTRAIN_EXPECT_GPUS");
      e != nullptr && absl::SimpleAtoi(e, &expected)) {
    ASSERT_THAT(found, IsOk());
    EXPECT_EQ(static_cast<int>(found->size()), expected);
  }
}

}  // namespace
}  // namespace dstrain::agent
