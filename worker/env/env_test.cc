// PosixEnv against real files under the test's temporary directory.
#include "worker/env/env.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/env/test_dir.h"

namespace dstrain::env {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

TEST(PathTest, JoinAndDirname) {
  EXPECT_EQ(JoinPath("a", "b"), "a/b");
  EXPECT_EQ(JoinPath("a/", "b"), "a/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
  EXPECT_EQ(Dirname("a/b/c"), "a/b");
  EXPECT_EQ(Dirname("a/b/"), "a");
  EXPECT_EQ(Dirname("c"), ".");
  EXPECT_EQ(Dirname("/c"), "/");
}

TEST(PosixEnvTest, WriteSyncReadBack) {
  Env* env = PosixEnv::Default();
  const std::string dir = FreshTestDir(env);
  const std::string path = JoinPath(dir, "f");
  absl::StatusOr<std::unique_ptr<WritableFile>> file = env->NewWritableFile(path);
  ASSERT_THAT(file, IsOk());
  EXPECT_THAT((*file)->Append("hello "), IsOk());
  EXPECT_THAT((*file)->Append(std::string(100000, 'x')), IsOk());
  EXPECT_THAT((*file)->Flush(), IsOk());
  EXPECT_THAT((*file)->Sync(), IsOk());
  EXPECT_THAT((*file)->Close(), IsOk());
  EXPECT_THAT((*file)->Append("late"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(path)));

  absl::StatusOr<uint64_t> size = env->GetFileSize(path);
  ASSERT_THAT(size, IsOk());
  EXPECT_EQ(*size, 100006u);
  absl::StatusOr<std::string> data = env->ReadFileToString(path, 1 << 20);
  ASSERT_THAT(data, IsOk());
  EXPECT_EQ(*data, "hello " + std::string(100000, 'x'));
  EXPECT_THAT(env->ReadFileToString(path, 1000),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(path)));
}

// Skip moves forward without reading (a seek for POSIX files, reads for the default): a reader
// of a few ranges of a large file lands on the same bytes either way.
TEST(PosixEnvTest, SkipThenReadLandsOnTheSameBytes) {
  Env* env = PosixEnv::Default();
  const std::string dir = FreshTestDir(env);
  const std::string path = JoinPath(dir, "f");
  std::string data(3 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 7) >> 3);
  ASSERT_THAT(env->WriteStringToFile(path, data, /*sync=*/false), IsOk());

  // The base class's Skip, through a file that only reads.
  class ReadOnly final : public SequentialFile {
   public:
    explicit ReadOnly(std::unique_ptr<SequentialFile> f) : f_(std::move(f)) {}
    absl::StatusOr<size_t> Read(size_t n, char* scratch) override { return f_->Read(n, scratch); }

   private:
    std::unique_ptr<SequentialFile> f_;
  };
  for (const bool seek : {true, false}) {
    absl::StatusOr<std::unique_ptr<SequentialFile>> opened = env->NewSequentialFile(path);
    ASSERT_THAT(opened, IsOk());
    std::unique_ptr<SequentialFile> file = *std::move(opened);
    if (!seek) file = std::make_unique<ReadOnly>(std::move(file));
    char got[5] = {};
    ASSERT_THAT(file->Skip(10), IsOk());
    ASSERT_THAT(file->Read(5, got), IsOk());
    EXPECT_EQ(std::string(got, 5), data.substr(10, 5)) << seek;
    ASSERT_THAT(file->Skip((2 << 20) + 1), IsOk());  // more than one read's worth
    ASSERT_THAT(file->Read(5, got), IsOk());
    EXPECT_EQ(std::string(got, 5), data.substr(15 + (2 << 20) + 1, 5)) << seek;
    ASSERT_THAT(file->Skip(data.size()), IsOk());  // past the end: the next read says so
    EXPECT_EQ(*file->Read(5, got), 0u) << seek;
  }
}

// Appends past the early-writeback threshold (8 MiB), in pieces that straddle it, read back
// exactly.
TEST(PosixEnvTest, LargeAppendsReadBackExactly) {
  Env* env = PosixEnv::Default();
  const std::string path = JoinPath(FreshTestDir(env), "big");
  std::string expected;
  for (size_t piece : {size_t{5} << 20, size_t{7} << 20, size_t{1}, size_t{9} << 20}) {
    for (size_t i = 0; i < piece; ++i) {
      expected.push_back(static_cast<char>((expected.size() * 131) >> 7));
    }
  }
  auto file = env->NewWritableFile(path);
  ASSERT_THAT(file, IsOk());
  size_t at = 0;
  for (size_t piece : {size_t{5} << 20, size_t{7} << 20, size_t{1}, size_t{9} << 20}) {
    ASSERT_THAT((*file)->Append(absl::string_view(expected).substr(at, piece)), IsOk());
    at += piece;
  }
  ASSERT_THAT((*file)->Sync(), IsOk());
  ASSERT_THAT((*file)->Close(), IsOk());
  absl::StatusOr<std::string> data = env->ReadFileToString(path, uint64_t{1} << 30);
  ASSERT_THAT(data, IsOk());
  EXPECT_TRUE(*data == expected);
}

TEST(PosixEnvTest, DirectoriesRenameRemove) {
  Env* env = PosixEnv::Default();
  const std::string dir = FreshTestDir(env);
  const std::string deep = JoinPath(dir, "a/b/c");
  ASSERT_THAT(env->CreateDirs(deep), IsOk());
  EXPECT_THAT(env->CreateDirs(deep), IsOk());
  EXPECT_TRUE(env->IsDirectory(deep));
  EXPECT_THAT(env->CreateDir(deep), StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr(deep)));
  ASSERT_THAT(env->WriteStringToFile(JoinPath(deep, "f"), "1", true), IsOk());
  ASSERT_THAT(env->WriteStringToFile(JoinPath(dir, "g"), "2", true), IsOk());
  ASSERT_THAT(env->WriteStringToFile(JoinPath(dir, "h"), "3", true), IsOk());

  absl::StatusOr<std::vector<std::string>> children = env->GetChildren(dir);
  ASSERT_THAT(children, IsOk());
  EXPECT_THAT(*children, UnorderedElementsAre("a", "g", "h"));

  // Rename replaces an existing file atomically.
  ASSERT_THAT(env->RenameFile(JoinPath(dir, "g"), JoinPath(dir, "h")), IsOk());
  EXPECT_FALSE(env->FileExists(JoinPath(dir, "g")));
  EXPECT_EQ(*env->ReadFileToString(JoinPath(dir, "h"), 10), "2");
  EXPECT_THAT(env->SyncDir(dir), IsOk());

  ASSERT_THAT(env->RemoveDirRecursively(JoinPath(dir, "a")), IsOk());
  EXPECT_FALSE(env->FileExists(JoinPath(dir, "a")));
  ASSERT_THAT(env->RemoveFile(JoinPath(dir, "h")), IsOk());
  EXPECT_THAT(*env->GetChildren(dir), ::testing::IsEmpty());
}

TEST(PosixEnvTest, ErrorsNameThePathAndCause) {
  Env* env = PosixEnv::Default();
  const std::string dir = FreshTestDir(env);
  const std::string missing = JoinPath(dir, "missing");
  EXPECT_THAT(env->NewSequentialFile(missing),
              StatusIs(absl::StatusCode::kNotFound,
                       ::testing::AllOf(HasSubstr(missing), HasSubstr("No such file"))));
  EXPECT_THAT(env->GetFileSize(missing), StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(env->RemoveFile(missing), StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(env->RenameFile(missing, JoinPath(dir, "x")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(env->SyncDir(missing), StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  EXPECT_THAT(env->NewWritableFile(JoinPath(missing, "f")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
}

}  // namespace
}  // namespace dstrain::env
