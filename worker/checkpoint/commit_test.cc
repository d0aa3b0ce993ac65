// The commit protocol against crashes at every operation, torn writes, bit flips and full disks,
// and retention.
#include "worker/checkpoint/commit.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/env/env.h"
#include "worker/env/fault_injection_env.h"

namespace dstrain::checkpoint {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Shard contents that differ per tag, so a mix of two checkpoints cannot pass for one.
std::string ShardData(const std::string& tag, int rank) {
  std::string s;
  for (int i = 0; i < 1000 + 37 * rank; ++i)
    s += static_cast<char>((i * 31 + rank + tag.size()) & 0xFF);
  return absl::StrCat(tag, "/", rank, "/", s);
}

absl::Status Save(env::Env* env, const std::string& root, const std::string& tag, int64_t step) {
  DT_ASSIGN_OR_RETURN(std::unique_ptr<CheckpointWriter> w,
                      CheckpointWriter::Begin(env, root, tag, step));
  for (int rank = 0; rank < 2; ++rank) {
    DT_RETURN_IF_ERROR(w->WriteShard(absl::StrCat("rank_", rank, ".bin"), ShardData(tag, rank)));
  }
  return w->Commit({{"world_size", 2}, {"tag_again", tag}});
}

// Loads `tag` (or "latest") completely and returns its tag, checking every byte.
absl::StatusOr<std::string> LoadFully(env::Env* env, const std::string& root,
                                      absl::string_view tag) {
  DT_ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> r, CheckpointReader::Open(env, root, tag));
  const CheckpointManifest& m = r->manifest();
  if (m.shards.size() != 2 || m.meta.value("tag_again", "") != m.tag) {
    return absl::InternalError("manifest incomplete");
  }
  for (int rank = 0; rank < 2; ++rank) {
    DT_ASSIGN_OR_RETURN(std::string data, r->ReadShard(absl::StrCat("rank_", rank, ".bin")));
    if (data != ShardData(m.tag, rank)) return absl::InternalError("shard content differs");
  }
  return m.tag;
}

// The loaded tag, or the error as text (readable in a failed EXPECT_EQ).
std::string Loaded(env::Env* env, const std::string& root, absl::string_view tag) {
  absl::StatusOr<std::string> loaded = LoadFully(env, root, tag);
  return loaded.ok() ? *loaded : loaded.status().ToString();
}

class CommitTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = FreshRoot(""); }

  std::string FreshRoot(absl::string_view suffix) {
    const char* tmp = std::getenv("TEST_TMPDIR");
    const std::string dir = env::JoinPath(
        tmp != nullptr ? tmp : "/tmp",
        absl::StrCat(::testing::UnitTest::GetInstance()->current_test_info()->name(), suffix));
    if (base_->FileExists(dir)) {
      EXPECT_THAT(base_->RemoveDirRecursively(dir), IsOk());
    }
    return env::JoinPath(dir, "ckpt");
  }

  env::Env* base_ = env::PosixEnv::Default();
  std::string root_;
};

TEST_F(CommitTest, SaveAndLoadRoundTrip) {
  ASSERT_THAT(Save(base_, root_, "step100", 100), IsOk());
  absl::StatusOr<std::unique_ptr<CheckpointReader>> r =
      CheckpointReader::Open(base_, root_, "latest");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ((*r)->manifest().tag, "step100");
  EXPECT_EQ((*r)->manifest().step, 100);
  EXPECT_EQ((*r)->manifest().meta["world_size"], 2);
  EXPECT_EQ((*r)->manifest().shards[1].bytes, ShardData("step100", 1).size());
  EXPECT_THAT((*r)->VerifyAll(), IsOk());
  EXPECT_THAT(LoadFully(base_, root_, "step100"), IsOk());
  EXPECT_THAT((*r)->ReadShard("nope"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  EXPECT_EQ(*base_->ReadFileToString(env::JoinPath(root_, "latest"), 100), "step100");
  EXPECT_FALSE(base_->FileExists(env::JoinPath(root_, "step100.tmp")));
  EXPECT_THAT(Save(base_, root_, "step100", 100),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("step100")));
  EXPECT_THAT(CheckpointWriter::Begin(base_, root_, "latest", 1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("latest")));
  EXPECT_THAT(CheckpointWriter::Begin(base_, root_, "a/b", 1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a/b")));
}

TEST_F(CommitTest, NothingCommittedIsNotFound) {
  EXPECT_THAT(CheckpointReader::Open(base_, root_, "latest").status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(root_)));
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> w =
      CheckpointWriter::Begin(base_, root_, "step1", 1);
  ASSERT_THAT(w, IsOk());
  ASSERT_THAT((*w)->WriteShard("rank_0.bin", "x"), IsOk());
  // Not committed yet: invisible.
  EXPECT_THAT(CheckpointReader::Open(base_, root_, "step1").status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("not committed")));
  EXPECT_THAT(*ListCommitted(base_, root_), ::testing::IsEmpty());
}

// Waits for a save run by std::async; one that is still waiting after 30 s fails the test, and its
// marker is removed so that it ends (the future's destructor would otherwise wait forever).
bool FinishesAlone(std::future<absl::Status>& saved, const std::string& marker) {
  if (saved.wait_for(std::chrono::seconds(30)) == std::future_status::ready) return true;
  std::remove(marker.c_str());
  saved.wait();
  return false;
}

// The fault test's hook (DSTRAIN_TEST_PAUSE_BEFORE_COMMIT, commit.cc): unset, or naming a file in
// a directory that does not exist, a save neither waits nor leaves a file behind.
TEST_F(CommitTest, PauseBeforeCommitHookIsANoOpUnlessArmed) {
  const std::string dir = FreshRoot("_pause");  // a scratch path beside the root
  ASSERT_THAT(base_->CreateDirs(dir), IsOk());
  ASSERT_EQ(unsetenv("DSTRAIN_TEST_PAUSE_BEFORE_COMMIT"), 0);
  // On another thread, so a save that waits fails here instead of hanging the test.
  auto saved = std::async(std::launch::async, [&] { return Save(base_, root_, "step1", 1); });
  ASSERT_TRUE(FinishesAlone(saved, "")) << "the save waited with the hook unset";
  EXPECT_THAT(saved.get(), IsOk());
  EXPECT_EQ(Loaded(base_, root_, "latest"), "step1");
  EXPECT_THAT(*base_->GetChildren(dir), ::testing::IsEmpty());

  const std::string missing = env::JoinPath(dir, "no_such_dir");
  const std::string marker = env::JoinPath(missing, "marker");
  ASSERT_EQ(setenv("DSTRAIN_TEST_PAUSE_BEFORE_COMMIT", marker.c_str(), 1), 0);
  saved = std::async(std::launch::async, [&] { return Save(base_, root_, "step2", 2); });
  const bool alone = FinishesAlone(saved, marker);
  ASSERT_EQ(unsetenv("DSTRAIN_TEST_PAUSE_BEFORE_COMMIT"), 0);
  ASSERT_TRUE(alone) << "the save waited with the marker's directory missing";
  EXPECT_THAT(saved.get(), IsOk());
  EXPECT_EQ(Loaded(base_, root_, "latest"), "step2");
  EXPECT_FALSE(base_->FileExists(missing));
}

// Armed, the commit stops with the shards and manifest synced and the tag not yet renamed into
// place, names the tag in the marker, and finishes once the marker is removed.
TEST_F(CommitTest, PauseBeforeCommitHookHoldsTheRenameUntilTheMarkerIsGone) {
  const std::string dir = FreshRoot("_pause");  // a scratch path beside the root
  ASSERT_THAT(base_->CreateDirs(dir), IsOk());
  const std::string marker = env::JoinPath(dir, "marker");
  ASSERT_EQ(setenv("DSTRAIN_TEST_PAUSE_BEFORE_COMMIT", marker.c_str(), 1), 0);
  auto saved = std::async(std::launch::async, [&] { return Save(base_, root_, "step7", 7); });
  for (int i = 0; i < 3000 && !base_->FileExists(marker); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(unsetenv("DSTRAIN_TEST_PAUSE_BEFORE_COMMIT"), 0);
  ASSERT_TRUE(base_->FileExists(marker)) << "the save did not pause";
  EXPECT_EQ(*base_->ReadFileToString(marker, 100), "step7");
  EXPECT_TRUE(base_->FileExists(env::JoinPath(root_, "step7.tmp/manifest.json")));
  EXPECT_THAT(*ListCommitted(base_, root_), ::testing::IsEmpty());
  EXPECT_EQ(saved.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  ASSERT_THAT(base_->RemoveFile(marker), IsOk());
  ASSERT_TRUE(FinishesAlone(saved, marker)) << "the save went on waiting after the marker went";
  EXPECT_THAT(saved.get(), IsOk());
  EXPECT_EQ(Loaded(base_, root_, "latest"), "step7");
}

// The heart of the protocol: crash after each of the save's mutating operations in turn.
void CrashAtEveryOperation(bool with_previous,
                           const std::function<std::string(absl::string_view)>& fresh_root) {
  env::Env* base = env::PosixEnv::Default();
  std::set<std::string> outcomes;
  for (int n = 0;; ++n) {
    ASSERT_LT(n, 1000) << "save never finished";
    const std::string root = fresh_root(absl::StrCat("_", n));
    if (with_previous) {
      ASSERT_THAT(Save(base, root, "step1", 1), IsOk());
    }
    env::FaultInjectionEnv env(base);
    env.CrashAfter(n);
    const absl::Status saved = Save(&env, root, "step2", 2);
    // A save that returned OK is durable: a crash right after it must not undo it.
    const bool finished = saved.ok();
    if (finished) {
      ASSERT_THAT(env.SimulateCrash(), IsOk());
    } else {
      ASSERT_THAT(saved, StatusIs(absl::StatusCode::kAborted, HasSubstr("crash"))) << n;
    }
    absl::StatusOr<std::string> loaded = LoadFully(base, root, "latest");
    if (!with_previous && !loaded.ok()) {
      EXPECT_THAT(loaded, StatusIs(absl::StatusCode::kNotFound, ::testing::_)) << "op " << n;
      outcomes.insert("nothing");
    } else {
      ASSERT_THAT(loaded, IsOk()) << "crash after op " << n;
      outcomes.insert(*loaded);
    }
    if (finished) {
      EXPECT_EQ(Loaded(base, root, "latest"), "step2") << "a finished save was lost";
      EXPECT_GT(n, 10);  // sanity: the loop really walked through the save
      break;
    }
    ASSERT_THAT(KeepLast(base, root, 5), IsOk());
    // After the crash a retry succeeds and becomes the latest, unless the crash came after the
    // commit point (the tag exists, and loads as the latest even where the pointer still names
    // step1).
    const absl::Status retried = Save(base, root, "step2", 2);
    if (!absl::IsAlreadyExists(retried)) {
      ASSERT_THAT(retried, IsOk()) << n;
      EXPECT_EQ(Loaded(base, root, "latest"), "step2");
    }
  }
  EXPECT_TRUE(outcomes.count("step2") > 0);
  EXPECT_TRUE(outcomes.count(with_previous ? "step1" : "nothing") > 0);
}

TEST_F(CommitTest, CrashAfterEveryOperationLeavesOldOrNewCheckpoint) {
  CrashAtEveryOperation(/*with_previous=*/true,
                        [this](absl::string_view s) { return FreshRoot(s); });
}

TEST_F(CommitTest, CrashAfterEveryOperationOfTheFirstSave) {
  CrashAtEveryOperation(/*with_previous=*/false,
                        [this](absl::string_view s) { return FreshRoot(s); });
}

TEST_F(CommitTest, TornShardIsDetected) {
  ASSERT_THAT(Save(base_, root_, "step1", 1), IsOk());
  env::FaultInjectionEnv env(base_);
  const std::string shard = env::JoinPath(root_, "step2.tmp/rank_1.bin");
  env.SetTornWrite(shard, 100);
  // The device lied, so the save itself succeeds ...
  ASSERT_THAT(Save(&env, root_, "step2", 2), IsOk());
  // ... but the reader refuses the torn checkpoint, naming the file, and falls back.
  EXPECT_THAT(
      CheckpointReader::Open(base_, root_, "step2").status(),
      StatusIs(absl::StatusCode::kDataLoss,
               AllOf(HasSubstr(env::JoinPath(root_, "step2/rank_1.bin")), HasSubstr("torn"))));
  EXPECT_EQ(Loaded(base_, root_, "latest"), "step1");
}

TEST_F(CommitTest, FlippedByteFailsTheChecksumNamingTheFile) {
  ASSERT_THAT(Save(base_, root_, "step1", 1), IsOk());
  const std::string shard = env::JoinPath(root_, "step1/rank_0.bin");
  std::string data = *base_->ReadFileToString(shard, 1 << 20);
  data[data.size() / 2] ^= 0x10;
  ASSERT_THAT(base_->WriteStringToFile(shard, data, true), IsOk());
  absl::StatusOr<std::unique_ptr<CheckpointReader>> r =
      CheckpointReader::Open(base_, root_, "latest");
  ASSERT_THAT(r, IsOk());  // sizes still match; only a full read can tell
  EXPECT_THAT((*r)->ReadShard("rank_0.bin"),
              StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr(shard), HasSubstr("crc32c"))));
  EXPECT_THAT((*r)->VerifyAll(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr(shard)));
  EXPECT_THAT((*r)->ReadShard("rank_1.bin"), IsOk());
}

TEST_F(CommitTest, ShardReaderReadsInPlaceAndChecksAtFinish) {
  ASSERT_THAT(Save(base_, root_, "step1", 1), IsOk());
  const std::string data = ShardData("step1", 1);
  absl::StatusOr<std::unique_ptr<CheckpointReader>> r =
      CheckpointReader::Open(base_, root_, "latest");
  ASSERT_THAT(r, IsOk());
  {
    // Pieces of any size land in order; reading past the end names the file and changes nothing.
    auto shard = (*r)->OpenShard("rank_1.bin");
    ASSERT_THAT(shard, IsOk());
    std::string got(data.size(), '?');
    ASSERT_THAT((*shard)->Read(got.data(), 3), IsOk());
    ASSERT_THAT((*shard)->Read(got.data() + 3, data.size() - 4), IsOk());
    EXPECT_EQ((*shard)->remaining(), 1u);
    EXPECT_THAT((*shard)->Read(got.data(), 2),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank_1.bin")));
    ASSERT_THAT((*shard)->Read(got.data() + data.size() - 1, 1), IsOk());
    EXPECT_EQ(got, data);
    EXPECT_THAT((*shard)->Finish(), IsOk());
  }
  {
    // Finish reads what was left unread and still checks the checksum.
    auto shard = (*r)->OpenShard("rank_1.bin");
    ASSERT_THAT(shard, IsOk());
    char first = 0;
    ASSERT_THAT((*shard)->Read(&first, 1), IsOk());
    EXPECT_THAT((*shard)->Finish(), IsOk());
    EXPECT_EQ((*shard)->remaining(), 0u);
  }
  EXPECT_THAT((*r)->OpenShard("nope").status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  // A damaged byte after everything the caller read is still caught by Finish.
  const std::string path = env::JoinPath(root_, "step1/rank_1.bin");
  std::string damaged = data;
  damaged.back() ^= 0x01;
  ASSERT_THAT(base_->WriteStringToFile(path, damaged, true), IsOk());
  auto shard = (*r)->OpenShard("rank_1.bin");
  ASSERT_THAT(shard, IsOk());
  char first = 0;
  ASSERT_THAT((*shard)->Read(&first, 1), IsOk());
  EXPECT_THAT((*shard)->Finish(),
              StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr(path), HasSubstr("crc32c"))));
}

// A verified reader's Skip still feeds the checksum, so damage in bytes nobody wanted is caught;
// a ranged reader seeks past them and has no checksum to offer.
TEST_F(CommitTest, SkipIsCheckedWhenVerifiedAndSeeksWhenRanged) {
  ASSERT_THAT(Save(base_, root_, "step1", 1), IsOk());
  const std::string data = ShardData("step1", 1);
  const std::string path = env::JoinPath(root_, "step1/rank_1.bin");
  std::string damaged = data;
  damaged[500] ^= 0x01;
  ASSERT_THAT(base_->WriteStringToFile(path, damaged, true), IsOk());
  absl::StatusOr<std::unique_ptr<CheckpointReader>> r =
      CheckpointReader::Open(base_, root_, "latest");
  ASSERT_THAT(r, IsOk());
  for (const bool verified : {true, false}) {
    auto shard = verified ? (*r)->OpenShard("rank_1.bin") : (*r)->OpenShardRanges("rank_1.bin");
    ASSERT_THAT(shard, IsOk());
    char got[4] = {};
    ASSERT_THAT((*shard)->Skip(600), IsOk());
    EXPECT_EQ((*shard)->offset(), 600u);
    ASSERT_THAT((*shard)->Read(got, 4), IsOk());
    EXPECT_EQ(std::string(got, 4), data.substr(600, 4));
    EXPECT_THAT((*shard)->Skip(data.size()),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("rank_1.bin")));
    if (verified) {
      EXPECT_THAT((*shard)->Finish(), StatusIs(absl::StatusCode::kDataLoss,
                                               AllOf(HasSubstr(path), HasSubstr("crc32c"))));
    } else {
      EXPECT_THAT((*shard)->Finish(),
                  StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(path)));
    }
  }
}

// Files that are no rank's shard (a consolidated model) are listed apart, committed and checked
// like shards.
TEST_F(CommitTest, OtherFilesAreListedAndChecked) {
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> w =
      CheckpointWriter::Begin(base_, root_, "step1", 1);
  ASSERT_THAT(w, IsOk());
  ASSERT_THAT((*w)->WriteShard("rank_0.bin", "shard"), IsOk());
  absl::StatusOr<ShardRecord> model =
      WriteShardFile(base_, (*w)->tmp_dir(), "model.bin", "weights");
  ASSERT_THAT(model, IsOk());
  ASSERT_THAT((*w)->AddFile(*model), IsOk());
  EXPECT_THAT((*w)->AddFile(*model),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("model")));
  ASSERT_THAT((*w)->Commit(nlohmann::json::object()), IsOk());
  absl::StatusOr<std::unique_ptr<CheckpointReader>> r =
      CheckpointReader::Open(base_, root_, "step1");
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ((*r)->manifest().shards.size(), 1u);
  ASSERT_EQ((*r)->manifest().files.size(), 1u);
  EXPECT_EQ((*r)->manifest().files[0].name, "model.bin");
  EXPECT_EQ(*(*r)->ReadShard("model.bin"), "weights");
  EXPECT_THAT((*r)->VerifyAll(), IsOk());
  const std::string path = env::JoinPath(root_, "step1/model.bin");
  ASSERT_THAT(base_->WriteStringToFile(path, "weightz", true), IsOk());
  EXPECT_THAT((*r)->VerifyAll(),
              StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr(path), HasSubstr("crc32c"))));
  ASSERT_THAT(base_->WriteStringToFile(path, "w", true), IsOk());
  EXPECT_THAT(CheckpointReader::Open(base_, root_, "step1").status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path)));
}

TEST_F(CommitTest, DiskFullKeepsThePreviousCheckpoint) {
  ASSERT_THAT(Save(base_, root_, "step1", 1), IsOk());
  env::FaultInjectionEnv env(base_);
  env.SetDiskFullLimit(1500);  // the first shard fits, the second does not
  EXPECT_THAT(Save(&env, root_, "step2", 2),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr(env::JoinPath(root_, "step2.tmp/rank_1.bin"))));
  EXPECT_EQ(Loaded(base_, root_, "latest"), "step1");
  EXPECT_THAT(CheckpointReader::Open(base_, root_, "step2").status(),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  // Retention clears the leftover; a later save with space succeeds.
  ASSERT_THAT(KeepLast(base_, root_, 3), IsOk());
  EXPECT_FALSE(base_->FileExists(env::JoinPath(root_, "step2.tmp")));
  EXPECT_THAT(Save(base_, root_, "step2", 2), IsOk());
}

// Retention removes only what the writer made: its own <tag>.tmp saves (marked) and the pointer's
// latest.tmp. Other entries with a .tmp name (a user's file, a directory of data, an empty
// directory, one whose marker names another tag) stay, and Begin refuses to take over one of them.
TEST_F(CommitTest, KeepLastLeavesForeignTmpEntriesAlone) {
  ASSERT_THAT(Save(base_, root_, "step1", 1), IsOk());
  {
    absl::StatusOr<std::unique_ptr<CheckpointWriter>> interrupted =
        CheckpointWriter::Begin(base_, root_, "step2", 2);
    ASSERT_THAT(interrupted, IsOk());
    ASSERT_THAT((*interrupted)->WriteShard("rank_0.bin", "half"), IsOk());
  }
  const auto at = [this](absl::string_view name) { return env::JoinPath(root_, name); };
  ASSERT_THAT(base_->WriteStringToFile(at("notes.tmp"), "mine", true), IsOk());
  ASSERT_THAT(base_->CreateDirs(at("data.tmp/part")), IsOk());
  ASSERT_THAT(base_->WriteStringToFile(at("data.tmp/part/x.bin"), "data", true), IsOk());
  ASSERT_THAT(base_->CreateDirs(at("empty.tmp")), IsOk());
  ASSERT_THAT(base_->CreateDirs(at("other.tmp")), IsOk());
  ASSERT_THAT(base_->WriteStringToFile(at("other.tmp/.dstrain-save"), R"({"tag":"else"})", true),
              IsOk());
  ASSERT_THAT(base_->WriteStringToFile(at("latest.tmp"), "step", true), IsOk());

  ASSERT_THAT(KeepLast(base_, root_, 1), IsOk());
  EXPECT_FALSE(base_->FileExists(at("step2.tmp"))) << "an interrupted save of ours";
  EXPECT_FALSE(base_->FileExists(at("latest.tmp"))) << "the pointer's temporary file";
  EXPECT_EQ(*base_->ReadFileToString(at("notes.tmp"), 100), "mine");
  EXPECT_EQ(*base_->ReadFileToString(at("data.tmp/part/x.bin"), 100), "data");
  EXPECT_TRUE(base_->IsDirectory(at("empty.tmp")));
  EXPECT_TRUE(base_->IsDirectory(at("other.tmp")));
  EXPECT_EQ(Loaded(base_, root_, "latest"), "step1");

  // A save of tag "data" would have to replace data.tmp/: refused, naming it, and nothing lost.
  EXPECT_THAT(CheckpointWriter::Begin(base_, root_, "data", 3).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(at("data.tmp"))));
  EXPECT_THAT(CheckpointWriter::Begin(base_, root_, "notes", 3).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(at("notes.tmp"))));
  EXPECT_EQ(*base_->ReadFileToString(at("data.tmp/part/x.bin"), 100), "data");
  // An empty one is what a crash before the marker leaves: a save of that tag takes it over.
  EXPECT_THAT(Save(base_, root_, "empty", 4), IsOk());
}

std::vector<std::string> Tags(env::Env* env, const std::string& root) {
  std::vector<std::string> tags;
  absl::StatusOr<std::vector<CheckpointManifest>> committed = ListCommitted(env, root);
  EXPECT_THAT(committed, IsOk());
  if (!committed.ok()) return tags;
  for (const CheckpointManifest& m : *committed) tags.push_back(m.tag);
  return tags;
}

TEST_F(CommitTest, KeepLastKeepsTheNewestAndTheLatest) {
  // Steps out of name order, to show ordering is by step.
  ASSERT_THAT(Save(base_, root_, "b", 20), IsOk());
  ASSERT_THAT(Save(base_, root_, "a", 30), IsOk());
  ASSERT_THAT(Save(base_, root_, "d", 40), IsOk());
  ASSERT_THAT(Save(base_, root_, "c", 50), IsOk());
  EXPECT_THAT(Tags(base_, root_), ElementsAre("b", "a", "d", "c"));
  // Point `latest` at an old tag (as a crash between a commit and the pointer's update leaves it,
  // or a person) and leave debris of an interrupted save plus a directory that is not a
  // checkpoint. KeepLast keeps the tag the pointer names; loading "latest" takes the newest.
  ASSERT_THAT(base_->WriteStringToFile(env::JoinPath(root_, "latest"), "b", true), IsOk());
  {
    absl::StatusOr<std::unique_ptr<CheckpointWriter>> interrupted =
        CheckpointWriter::Begin(base_, root_, "e", 60);
    ASSERT_THAT(interrupted, IsOk());
    ASSERT_THAT((*interrupted)->WriteShard("rank_0.bin", "x"), IsOk());
  }
  ASSERT_THAT(base_->CreateDirs(env::JoinPath(root_, "notes")), IsOk());

  ASSERT_THAT(KeepLast(base_, root_, 2), IsOk());
  EXPECT_THAT(Tags(base_, root_), ElementsAre("b", "d", "c"));
  EXPECT_FALSE(base_->FileExists(env::JoinPath(root_, "e.tmp")));
  EXPECT_TRUE(base_->IsDirectory(env::JoinPath(root_, "notes")));
  EXPECT_EQ(Loaded(base_, root_, "latest"), "c");

  ASSERT_THAT(KeepLast(base_, root_, 1), IsOk());
  EXPECT_THAT(Tags(base_, root_), ElementsAre("b", "c"));
  EXPECT_THAT(KeepLast(base_, root_, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

}  // namespace
}  // namespace dstrain::checkpoint
