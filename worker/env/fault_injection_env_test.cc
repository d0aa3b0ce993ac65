// The crash, I/O error, torn-write and disk-full model of FaultInjectionEnv, rule by rule (see its
// header).
#include "worker/env/fault_injection_env.h"

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/env/env.h"
#include "worker/env/test_dir.h"

namespace dstrain::env {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

class FaultInjectionEnvTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = FreshTestDir(base_); }

  std::string Read(const std::string& path) {
    absl::StatusOr<std::string> data = base_->ReadFileToString(path, 1 << 20);
    return data.ok() ? *data : "<" + data.status().ToString() + ">";
  }

  Env* base_ = PosixEnv::Default();
  FaultInjectionEnv env_{PosixEnv::Default()};
  std::string dir_;
};

TEST_F(FaultInjectionEnvTest, CrashKeepsOnlySyncedBytes) {
  const std::string path = JoinPath(dir_, "f");
  absl::StatusOr<std::unique_ptr<WritableFile>> f = env_.NewWritableFile(path);
  ASSERT_THAT(f, IsOk());
  ASSERT_THAT((*f)->Append("durable"), IsOk());
  ASSERT_THAT((*f)->Sync(), IsOk());
  ASSERT_THAT((*f)->Append("-lost"), IsOk());
  ASSERT_THAT(env_.SyncDir(dir_), IsOk());
  EXPECT_EQ(Read(path), "durable-lost");
  ASSERT_THAT(env_.SimulateCrash(), IsOk());
  EXPECT_EQ(Read(path), "durable");
  EXPECT_THAT((*f)->Append("x"), StatusIs(absl::StatusCode::kAborted, HasSubstr(path)));
}

TEST_F(FaultInjectionEnvTest, CreationWithoutSyncDirIsUndone) {
  const std::string file = JoinPath(dir_, "f");
  const std::string sub = JoinPath(dir_, "sub/deeper");
  ASSERT_THAT(env_.WriteStringToFile(file, "synced data", /*sync=*/true), IsOk());
  ASSERT_THAT(env_.CreateDirs(sub), IsOk());
  ASSERT_THAT(env_.SimulateCrash(), IsOk());
  EXPECT_FALSE(base_->FileExists(file));
  EXPECT_FALSE(base_->FileExists(JoinPath(dir_, "sub")));
}

TEST_F(FaultInjectionEnvTest, SyncDirMakesCreationDurable) {
  const std::string file = JoinPath(dir_, "f");
  ASSERT_THAT(env_.WriteStringToFile(file, "synced data", /*sync=*/true), IsOk());
  ASSERT_THAT(env_.SyncDir(dir_ + "/"), IsOk());
  ASSERT_THAT(env_.SimulateCrash(), IsOk());
  EXPECT_EQ(Read(file), "synced data");
}

TEST_F(FaultInjectionEnvTest, RenameWithoutSyncDirIsReversedAndRestoresTheReplacedFile) {
  const std::string a = JoinPath(dir_, "a");
  const std::string b = JoinPath(dir_, "b");
  ASSERT_THAT(base_->WriteStringToFile(b, "old", true), IsOk());
  ASSERT_THAT(env_.WriteStringToFile(a, "new", true), IsOk());
  ASSERT_THAT(env_.RenameFile(a, b), IsOk());
  EXPECT_EQ(Read(b), "new");
  ASSERT_THAT(env_.SimulateCrash(), IsOk());
  EXPECT_EQ(Read(b), "old");
  EXPECT_FALSE(base_->FileExists(a));  // its creation was never made durable either
}

TEST_F(FaultInjectionEnvTest, DurableDirectoryRenameCarriesPendingEntriesAlong) {
  const std::string tmp = JoinPath(dir_, "t.tmp");
  const std::string final_dir = JoinPath(dir_, "t");
  ASSERT_THAT(base_->CreateDir(tmp), IsOk());
  ASSERT_THAT(base_->SyncDir(dir_), IsOk());
  // The file's entry in t.tmp is never synced; the rename of t.tmp is.
  ASSERT_THAT(env_.WriteStringToFile(JoinPath(tmp, "f"), "data", true), IsOk());
  ASSERT_THAT(env_.RenameFile(tmp, final_dir), IsOk());
  ASSERT_THAT(env_.SyncDir(dir_), IsOk());
  ASSERT_THAT(env_.SimulateCrash(), IsOk());
  EXPECT_TRUE(base_->IsDirectory(final_dir));
  EXPECT_FALSE(base_->FileExists(JoinPath(final_dir, "f")));
}

TEST_F(FaultInjectionEnvTest, CrashAfterCountsMutatingOperations) {
  env_.CrashAfter(2);
  const std::string path = JoinPath(dir_, "f");
  absl::StatusOr<std::unique_ptr<WritableFile>> f = env_.NewWritableFile(path);  // op 1
  ASSERT_THAT(f, IsOk());
  EXPECT_THAT((*f)->Append("a"), IsOk());  // op 2
  EXPECT_FALSE(env_.crashed());
  EXPECT_THAT((*f)->Sync(), StatusIs(absl::StatusCode::kAborted, HasSubstr(path)));  // op 3
  EXPECT_TRUE(env_.crashed());
  EXPECT_THAT(env_.CreateDir(JoinPath(dir_, "d")),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("crash")));
  EXPECT_EQ(env_.mutating_ops(), 3);
  EXPECT_FALSE(base_->FileExists(path));
  env_.Restart();
  EXPECT_THAT(env_.CreateDir(JoinPath(dir_, "d")), IsOk());
  EXPECT_EQ(env_.mutating_ops(), 4);
}

TEST_F(FaultInjectionEnvTest, FailAfterFailsOneOperationWithoutACrash) {
  env_.FailAfter(2, absl::InternalError("Input/output error"));
  const std::string path = JoinPath(dir_, "f");
  absl::StatusOr<std::unique_ptr<WritableFile>> f = env_.NewWritableFile(path);  // op 1
  ASSERT_THAT(f, IsOk());
  EXPECT_THAT((*f)->Append("a"), IsOk());  // op 2
  EXPECT_THAT((*f)->Sync(),                // op 3
              StatusIs(absl::StatusCode::kInternal,
                       ::testing::AllOf(HasSubstr("sync " + path), HasSubstr("Input/output"))));
  EXPECT_FALSE(env_.crashed());
  EXPECT_THAT((*f)->Append("b"), IsOk());  // op 4: works again
  EXPECT_THAT((*f)->Sync(), IsOk());
  EXPECT_THAT((*f)->Close(), IsOk());
  EXPECT_EQ(env_.mutating_ops(), 6);
  ASSERT_THAT(env_.SyncDir(dir_), IsOk());
  ASSERT_THAT(env_.SimulateCrash(), IsOk());
  EXPECT_EQ(Read(path), "ab");
}

TEST_F(FaultInjectionEnvTest, DiskFullFailsTheAppendNamingTheFile) {
  env_.SetDiskFullLimit(10);
  const std::string path = JoinPath(dir_, "f");
  absl::StatusOr<std::unique_ptr<WritableFile>> f = env_.NewWritableFile(path);
  ASSERT_THAT(f, IsOk());
  EXPECT_THAT((*f)->Append("12345678"), IsOk());
  EXPECT_THAT((*f)->Append("abc"),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       ::testing::AllOf(HasSubstr(path), HasSubstr("no space"))));
  EXPECT_THAT((*f)->Append("ab"), IsOk());
  EXPECT_THAT((*f)->Close(), IsOk());
  EXPECT_EQ(Read(path), "12345678ab");
}

TEST_F(FaultInjectionEnvTest, TornWriteKeepsAPrefixSilently) {
  const std::string path = JoinPath(dir_, "f");
  env_.SetTornWrite(path, 5);
  absl::StatusOr<std::unique_ptr<WritableFile>> f = env_.NewWritableFile(path);
  ASSERT_THAT(f, IsOk());
  EXPECT_THAT((*f)->Append("abc"), IsOk());
  EXPECT_THAT((*f)->Append("defgh"), IsOk());
  EXPECT_THAT((*f)->Sync(), IsOk());
  EXPECT_THAT((*f)->Close(), IsOk());
  EXPECT_EQ(Read(path), "abcde");
}

}  // namespace
}  // namespace dstrain::env
