// WriteFileAtomically against its contract (env.h): on the real file system, and under
// FaultInjectionEnv with a crash or an I/O error at each of its steps in turn.
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/env/env.h"
#include "worker/env/fault_injection_env.h"
#include "worker/env/test_dir.h"

namespace dstrain::env {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Create, two appends, sync, close, rename, sync of the directory.
constexpr int kOpsOfATwoPieceWrite = 7;

class WriteFileAtomicallyTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = FreshTestDir(base_); }

  // A fresh directory holding, durably, the file "f" with `old` (no file when `old` is empty).
  std::string FreshDir(const std::string& name, const std::string& old) {
    const std::string dir = JoinPath(root_, name);
    EXPECT_THAT(base_->CreateDirs(dir), IsOk());
    if (!old.empty()) {
      EXPECT_THAT(base_->WriteStringToFile(JoinPath(dir, "f"), old, /*sync=*/true), IsOk());
      EXPECT_THAT(base_->SyncDir(dir), IsOk());
    }
    return dir;
  }

  std::string Read(const std::string& path) {
    absl::StatusOr<std::string> data = base_->ReadFileToString(path, 1 << 20);
    return data.ok() ? *data
                     : "<" + std::string(absl::StatusCodeToString(data.status().code())) + ">";
  }

  std::vector<std::string> Children(const std::string& dir) {
    absl::StatusOr<std::vector<std::string>> children = base_->GetChildren(dir);
    EXPECT_THAT(children, IsOk());
    return children.ok() ? *children : std::vector<std::string>{};
  }

  Env* base_ = PosixEnv::Default();
  std::string root_;
};

TEST_F(WriteFileAtomicallyTest, WritesThePiecesAndReplacesTheOldFile) {
  const std::string dir = FreshDir("d", "old contents");
  const std::string path = JoinPath(dir, "f");
  ASSERT_THAT(WriteFileAtomically(base_, path, {"new ", "", "contents"}), IsOk());
  EXPECT_EQ(Read(path), "new contents");
  ASSERT_THAT(WriteFileAtomically(base_, path, "one piece"), IsOk());
  EXPECT_EQ(Read(path), "one piece");
  ASSERT_THAT(WriteFileAtomically(base_, path, std::vector<absl::string_view>{}), IsOk());
  EXPECT_EQ(Read(path), "");
  EXPECT_THAT(Children(dir), ElementsAre("f"));
}

TEST_F(WriteFileAtomicallyTest, AStaleTemporaryIsReplaced) {
  const std::string dir = FreshDir("d", "");
  ASSERT_THAT(base_->WriteStringToFile(JoinPath(dir, "f.tmp"), "left by a crash, and longer",
                                       /*sync=*/false),
              IsOk());
  ASSERT_THAT(WriteFileAtomically(base_, JoinPath(dir, "f"), "new"), IsOk());
  EXPECT_EQ(Read(JoinPath(dir, "f")), "new");
  EXPECT_THAT(Children(dir), ElementsAre("f"));
}

TEST_F(WriteFileAtomicallyTest, OkMeansDurable) {
  const std::string dir = FreshDir("d", "old");
  FaultInjectionEnv env(base_);
  ASSERT_THAT(WriteFileAtomically(&env, JoinPath(dir, "f"), {"new ", "contents"}), IsOk());
  EXPECT_EQ(env.mutating_ops(), kOpsOfATwoPieceWrite);
  ASSERT_THAT(env.SimulateCrash(), IsOk());
  EXPECT_EQ(Read(JoinPath(dir, "f")), "new contents");
  EXPECT_THAT(Children(dir), ElementsAre("f"));
}

// A crash after each operation in turn, over an old file and over none: afterwards the file holds
// the old contents (or is absent) or all the new ones, and no temporary is left.
TEST_F(WriteFileAtomicallyTest, ACrashAtEveryStepLeavesTheOldFileOrTheNewOne) {
  for (const std::string old : {"old", ""}) {
    std::vector<std::string> outcomes;
    for (int n = 0;; ++n) {
      ASSERT_LE(n, kOpsOfATwoPieceWrite) << "the write never finished";
      const std::string dir = FreshDir(absl::StrCat("crash", old, n), old);
      const std::string path = JoinPath(dir, "f");
      FaultInjectionEnv env(base_);
      env.CrashAfter(n);
      const absl::Status written = WriteFileAtomically(&env, path, {"new ", "contents"});
      if (written.ok()) {
        ASSERT_THAT(env.SimulateCrash(), IsOk());
      } else {
        EXPECT_THAT(written, StatusIs(absl::StatusCode::kAborted, HasSubstr("crash"))) << n;
      }
      const std::string now = base_->FileExists(path) ? Read(path) : "";
      EXPECT_TRUE(now == old || now == "new contents") << "crash after op " << n << ": " << now;
      const std::vector<std::string> files =
          old.empty() && now.empty() ? std::vector<std::string>{} : std::vector<std::string>{"f"};
      EXPECT_EQ(Children(dir), files) << "crash after op " << n;
      outcomes.push_back(now);
      if (written.ok()) break;
    }
    // The loop walked through every step: the old state up to the directory's sync, then new.
    std::vector<std::string> want(kOpsOfATwoPieceWrite, old);
    want.push_back("new contents");
    EXPECT_EQ(outcomes, want);
  }
}

// An I/O error (no crash) at each operation in turn: the error comes back naming the operation;
// up to the rename the old file stays, after it the new one; the temporary is removed either way.
TEST_F(WriteFileAtomicallyTest, AnErrorAtEveryStepLeavesNoTemporaryBehind) {
  const std::vector<std::string> ops = {"create", "append", "append",         "sync",
                                        "close",  "rename", "fsync directory"};
  ASSERT_EQ(ops.size(), static_cast<size_t>(kOpsOfATwoPieceWrite));
  for (int n = 0; n <= kOpsOfATwoPieceWrite; ++n) {
    const std::string dir = FreshDir(absl::StrCat("error", n), "old");
    const std::string path = JoinPath(dir, "f");
    FaultInjectionEnv env(base_);
    env.FailAfter(n, absl::InternalError("Input/output error"));
    const absl::Status written = WriteFileAtomically(&env, path, {"new ", "contents"});
    if (n == kOpsOfATwoPieceWrite) {
      EXPECT_THAT(written, IsOk());
      EXPECT_EQ(Read(path), "new contents");
    } else {
      EXPECT_THAT(written,
                  StatusIs(absl::StatusCode::kInternal,
                           AllOf(HasSubstr(ops[n] + " " + dir), HasSubstr("Input/output"))))
          << n;
      // Only a failed sync of the directory comes after the rename.
      EXPECT_EQ(Read(path), ops[n] == "fsync directory" ? "new contents" : "old") << ops[n];
    }
    EXPECT_THAT(Children(dir), ElementsAre("f")) << ops[n];
  }
}

TEST_F(WriteFileAtomicallyTest, AFullDiskLeavesTheOldFile) {
  const std::string dir = FreshDir("d", "old");
  FaultInjectionEnv env(base_);
  env.SetDiskFullLimit(6);
  EXPECT_THAT(WriteFileAtomically(&env, JoinPath(dir, "f"), {"new ", "contents"}),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("f.tmp")));
  EXPECT_EQ(Read(JoinPath(dir, "f")), "old");
  EXPECT_THAT(Children(dir), ElementsAre("f"));
}

TEST_F(WriteFileAtomicallyTest, ARenameThatCannotHappenLeavesNoTemporary) {
  // A non-empty directory where the file should go: rename(2) refuses to replace it.
  const std::string dir = FreshDir("d", "");
  const std::string path = JoinPath(dir, "f");
  ASSERT_THAT(base_->CreateDirs(JoinPath(path, "inside")), IsOk());
  const absl::Status written = WriteFileAtomically(base_, path, "new");
  EXPECT_FALSE(written.ok());
  EXPECT_THAT(std::string(written.message()), HasSubstr("rename " + path + ".tmp"));
  EXPECT_TRUE(base_->IsDirectory(JoinPath(path, "inside")));
  EXPECT_THAT(Children(dir), ElementsAre("f"));
}

TEST_F(WriteFileAtomicallyTest, AMissingDirectoryIsNotFound) {
  const std::string dir = FreshDir("d", "");
  EXPECT_THAT(WriteFileAtomically(base_, JoinPath(dir, "no/such/f"), "new"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no/such/f.tmp")));
  EXPECT_THAT(Children(dir), IsEmpty());
}

}  // namespace
}  // namespace dstrain::env
