// Checkpoints through files on every rank together: resume from "latest" bitwise, per-rank
// state returned, a checkpoint of another world size refused on every rank, a flipped byte
// caught naming the file.
#include "worker/engine/checkpoint_io.h"

#include <cstdlib>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/checkpoint/commit.h"
#include "worker/engine/zero_test_util.h"
#include "worker/model/gpt.h"

namespace dstrain::engine {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using testing::Batch;
using ::testing::HasSubstr;
using testing::RunOnRanks;
using testing::SmallGptSpec;

std::string Root(const std::string& name) {
  return absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
}

struct Outcome {
  std::vector<float> params;
  std::vector<double> losses;
  std::string rank_state;  // what LoadCheckpoint returned
  absl::Status load;
};

// Optionally loads `load_tag` from `root`, trains steps [first, last), optionally saves `save_tag`.
std::vector<Outcome> Train(const config::JobSpec& spec, int world, const std::string& root,
                           const char* load_tag, int first, int last, const char* save_tag) {
  std::vector<Outcome> out(world);
  RunOnRanks(world, [&](int r, Communicator* comm) {
    CpuAllocator alloc;
    auto e = Engine::Initialize(*model::Gpt::Create(testing::ModelShape(spec), &alloc), spec,
                                &alloc, comm);
    ASSERT_THAT(e, IsOk());
    CheckpointOptions options{PosixEnv::Default(), root, /*keep_last=*/2, CommOptions{}};
    if (load_tag != nullptr) {
      auto state = LoadCheckpoint(**e, comm, options, load_tag);
      out[r].load = state.status();
      if (!state.ok()) return;
      out[r].rank_state = *state;
    }
    for (int step = first; step < last; ++step) {
      const auto [x, y] = Batch(spec, step, r, 0);
      ASSERT_THAT((*e)->Forward(x.data(), y.data()), IsOk());
      ASSERT_THAT((*e)->Backward(), IsOk());
      auto st = (*e)->Step();
      ASSERT_THAT(st, IsOk());
      out[r].losses.push_back((**st).loss);
    }
    if (save_tag != nullptr) {
      ASSERT_THAT(SaveCheckpoint(**e, comm, options, save_tag, absl::StrCat("loader of rank ", r)),
                  IsOk());
    }
    auto params = (*e)->GatherParams();
    ASSERT_THAT(params, IsOk());
    out[r].params = *std::move(params);
  });
  return out;
}

TEST(CheckpointIo, ResumeFromLatestIsBitwise) {
  const config::JobSpec spec = SmallGptSpec(2, 2, 1, 0.5, "", 8, R"(, "bf16": {"enabled": true})");
  const std::string root = Root("resume");
  const auto whole = Train(spec, 2, root + "_unused", nullptr, 0, 8, nullptr);
  Train(spec, 2, root, nullptr, 0, 2, "step2");
  Train(spec, 2, root, "latest", 2, 4, "step4");
  const auto resumed = Train(spec, 2, root, "latest", 4, 8, nullptr);
  for (int r = 0; r < 2; ++r) {
    ASSERT_THAT(resumed[r].load, IsOk());
    EXPECT_EQ(resumed[r].rank_state, absl::StrCat("loader of rank ", r));
    EXPECT_EQ(resumed[r].params, whole[r].params);
    EXPECT_EQ(resumed[r].losses,
              std::vector<double>(whole[r].losses.begin() + 4, whole[r].losses.end()));
  }
  // Retention keeps two; an explicit older tag still loads while it is kept.
  auto listed = ::dstrain::ListCommitted(PosixEnv::Default(), root);
  ASSERT_THAT(listed, IsOk());
  EXPECT_EQ(listed->size(), 2u);
}

TEST(CheckpointIo, AnotherWorldSizeIsRefusedOnEveryRank) {
  const std::string root = Root("world");
  Train(SmallGptSpec(2, 1, 1, 0.0, "", 4), 2, root, nullptr, 0, 1, "step1");
  const auto one = Train(SmallGptSpec(1, 1, 1, 0.0, "", 4), 1, root, "latest", 1, 2, nullptr);
  EXPECT_THAT(one[0].load, StatusIs(absl::StatusCode::kFailedPrecondition,
                                    HasSubstr("written at world size 2")));
}

TEST(CheckpointIo, AFlippedByteIsCaughtNamingTheFile) {
  const config::JobSpec spec = SmallGptSpec(2, 3, 1, 0.0, "", 4);
  const std::string root = Root("flip");
  Train(spec, 2, root, nullptr, 0, 1, "step1");
  const std::string shard = root + "/step1/rank_00001.bin";
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good());
    f.seekg(100);
    char c = 0;
    f.get(c);
    f.seekp(100);
    f.put(static_cast<char>(c ^ 0x10));
  }
  const auto out = Train(spec, 2, root, "step1", 1, 2, nullptr);
  EXPECT_THAT(out[1].load, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank_00001.bin")));
  EXPECT_FALSE(out[0].load.ok()) << "every rank fails together";
}

}  // namespace
}  // namespace dstrain::engine
