#include "worker/data/token_shard.h"

#include <sys/stat.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::data {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// A fresh directory per test under Bazel's TEST_TMPDIR.
std::string TestDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string dir =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", info->test_suite_name(), "_", info->name());
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

void WriteRaw(const std::string& path, const std::vector<int32_t>& header,
              const std::vector<uint16_t>& tokens, size_t extra_bytes = 0) {
  std::vector<int32_t> full(256, 0);
  for (size_t i = 0; i < header.size(); ++i) full[i] = header[i];
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(full.data()), full.size() * sizeof(int32_t));
  out.write(reinterpret_cast<const char*>(tokens.data()), tokens.size() * sizeof(uint16_t));
  for (size_t i = 0; i < extra_bytes; ++i) out.put('\0');
}

std::vector<uint16_t> Pattern(size_t n) {
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint16_t>(i * 2654435761u >> 7);
  return v;
}

TEST(TokenShard, RoundTripsEmptyOneAndManyTokens) {
  const std::string dir = TestDir();
  for (size_t n : {size_t{0}, size_t{1}, size_t{100000}}) {
    const std::string path = absl::StrCat(dir, "/shard_", n, ".bin");
    const std::vector<uint16_t> tokens = Pattern(n);
    ASSERT_THAT(WriteTokenShard(path, tokens), IsOk());
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(static_cast<size_t>(st.st_size), 1024 + 2 * n);
    absl::StatusOr<TokenShard> shard = TokenShard::Open(path);
    ASSERT_THAT(shard, IsOk());
    EXPECT_EQ(shard->path(), path);
    EXPECT_EQ(shard->size(), n);
    EXPECT_THAT(shard->tokens(), ElementsAreArray(tokens));
  }
}

TEST(TokenShard, WritesTheLlmcHeader) {
  const std::string path = TestDir() + "/h.bin";
  ASSERT_THAT(WriteTokenShard(path, std::vector<uint16_t>{7, 65535, 0}), IsOk());
  std::ifstream in(path, std::ios::binary);
  std::vector<int32_t> header(256);
  in.read(reinterpret_cast<char*>(header.data()), 1024);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], 3);
  for (int i = 3; i < 256; ++i) ASSERT_EQ(header[i], 0) << i;
  std::vector<uint16_t> tokens(3);
  in.read(reinterpret_cast<char*>(tokens.data()), 6);
  EXPECT_THAT(tokens, ElementsAre(7, 65535, 0));
  EXPECT_EQ(in.get(), EOF);
}

TEST(TokenShard, RewriteReplacesAndLeavesNoTemporaries) {
  const std::string dir = TestDir();
  const std::string path = dir + "/r.bin";
  ASSERT_THAT(WriteTokenShard(path, Pattern(1000)), IsOk());
  absl::StatusOr<TokenShard> old_shard = TokenShard::Open(path);
  ASSERT_THAT(old_shard, IsOk());
  ASSERT_THAT(WriteTokenShard(path, std::vector<uint16_t>{1, 2}), IsOk());
  // The old mapping still sees the old file (rename, not truncate-in-place).
  EXPECT_EQ(old_shard->size(), 1000u);
  EXPECT_THAT(old_shard->tokens(), ElementsAreArray(Pattern(1000)));
  absl::StatusOr<TokenShard> new_shard = TokenShard::Open(path);
  ASSERT_THAT(new_shard, IsOk());
  EXPECT_THAT(new_shard->tokens(), ElementsAre(1, 2));
  absl::StatusOr<std::vector<std::string>> all = ExpandShardPattern(dir + "/*");
  ASSERT_THAT(all, IsOk());
  EXPECT_THAT(*all, ElementsAre(path));
}

TEST(TokenShard, MoveKeepsTheMapping) {
  const std::string path = TestDir() + "/m.bin";
  ASSERT_THAT(WriteTokenShard(path, std::vector<uint16_t>{4, 5, 6}), IsOk());
  absl::StatusOr<TokenShard> a = TokenShard::Open(path, AccessHint::kRandom);
  ASSERT_THAT(a, IsOk());
  TokenShard b = std::move(*a);
  EXPECT_THAT(b.tokens(), ElementsAre(4, 5, 6));
  ASSERT_THAT(WriteTokenShard(path + "2", std::vector<uint16_t>{9}), IsOk());
  absl::StatusOr<TokenShard> c = TokenShard::Open(path + "2");
  ASSERT_THAT(c, IsOk());
  b = std::move(*c);
  EXPECT_THAT(b.tokens(), ElementsAre(9));
}

TEST(TokenShard, MissingFile) {
  const std::string path = TestDir() + "/nope.bin";
  EXPECT_THAT(TokenShard::Open(path), StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

TEST(TokenShard, BadMagic) {
  const std::string path = TestDir() + "/magic.bin";
  WriteRaw(path, {12345, 1, 2}, {1, 2});
  EXPECT_THAT(TokenShard::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("bad magic 12345"))));
}

TEST(TokenShard, Llama3ShardIsNamedAsSuch) {
  const std::string path = TestDir() + "/llama.bin";
  WriteRaw(path, {20240801, 7, 1}, {1, 0});
  EXPECT_THAT(TokenShard::Open(path), StatusIs(absl::StatusCode::kInvalidArgument,
                                               AllOf(HasSubstr(path), HasSubstr("Llama-3"))));
}

TEST(TokenShard, BadVersion) {
  const std::string path = TestDir() + "/version.bin";
  WriteRaw(path, {20240520, 2, 2}, {1, 2});
  EXPECT_THAT(TokenShard::Open(path), StatusIs(absl::StatusCode::kInvalidArgument,
                                               AllOf(HasSubstr(path), HasSubstr("version 2"))));
}

TEST(TokenShard, NegativeCount) {
  const std::string path = TestDir() + "/negative.bin";
  WriteRaw(path, {20240520, 1, -3}, {});
  EXPECT_THAT(TokenShard::Open(path), StatusIs(absl::StatusCode::kInvalidArgument,
                                               AllOf(HasSubstr(path), HasSubstr("negative"))));
}

TEST(TokenShard, TruncatedTokens) {
  const std::string path = TestDir() + "/short.bin";
  WriteRaw(path, {20240520, 1, 10}, {1, 2, 3});
  EXPECT_THAT(TokenShard::Open(path),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(path), HasSubstr("truncated"), HasSubstr("10 tokens"))));
}

TEST(TokenShard, TruncatedHeader) {
  const std::string path = TestDir() + "/tiny.bin";
  {
    std::ofstream out(path, std::ios::binary);
    const int32_t magic = 20240520;
    out.write(reinterpret_cast<const char*>(&magic), sizeof(magic));
  }
  EXPECT_THAT(TokenShard::Open(path),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(path), HasSubstr("truncated"), HasSubstr("header"))));
  const std::string empty = TestDir() + "/empty.bin";
  { std::ofstream out(empty, std::ios::binary); }
  EXPECT_THAT(TokenShard::Open(empty),
              StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr(empty), HasSubstr("0 bytes"))));
}

TEST(TokenShard, SizeMismatchWithTrailingBytes) {
  const std::string path = TestDir() + "/long.bin";
  WriteRaw(path, {20240520, 1, 2}, {1, 2}, /*extra_bytes=*/1);
  EXPECT_THAT(TokenShard::Open(path),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(path), HasSubstr("size mismatch"), HasSubstr("1029"))));
}

TEST(TokenShard, DirectoryIsNotAShard) {
  const std::string dir = TestDir();
  EXPECT_THAT(TokenShard::Open(dir), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(dir)));
}

TEST(TokenShard, WriteIntoMissingDirectoryFailsNamingIt) {
  const std::string path = TestDir() + "/no/such/dir/x.bin";
  EXPECT_THAT(WriteTokenShard(path, std::vector<uint16_t>{1}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

TEST(ExpandShardPattern, SortsBytewise) {
  const std::string dir = TestDir();
  for (const char* name : {"train_000002.bin", "train_000000.bin", "train_000010.bin",
                           "train_000001.bin", "val_000000.bin", "Train_zzz.bin"}) {
    ASSERT_THAT(WriteTokenShard(absl::StrCat(dir, "/", name), std::vector<uint16_t>{1}), IsOk());
  }
  absl::StatusOr<std::vector<std::string>> paths = ExpandShardPattern(dir + "/train_*.bin");
  ASSERT_THAT(paths, IsOk());
  EXPECT_THAT(*paths, ElementsAre(dir + "/train_000000.bin", dir + "/train_000001.bin",
                                  dir + "/train_000002.bin", dir + "/train_000010.bin"));
  // Uppercase sorts before lowercase bytewise, whatever the locale says.
  paths = ExpandShardPattern(dir + "/*rain_*.bin");
  ASSERT_THAT(paths, IsOk());
  EXPECT_EQ(paths->front(), dir + "/Train_zzz.bin");
}

TEST(ExpandShardPattern, PlainPathMustExist) {
  const std::string dir = TestDir();
  ASSERT_THAT(WriteTokenShard(dir + "/one.bin", std::vector<uint16_t>{1}), IsOk());
  absl::StatusOr<std::vector<std::string>> paths = ExpandShardPattern(dir + "/one.bin");
  ASSERT_THAT(paths, IsOk());
  EXPECT_THAT(*paths, ElementsAre(dir + "/one.bin"));
  EXPECT_THAT(ExpandShardPattern(dir + "/two.bin"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir + "/two.bin")));
}

TEST(ExpandShardPattern, EmptyMatchNamesThePattern) {
  const std::string pattern = TestDir() + "/train_*.bin";
  EXPECT_THAT(ExpandShardPattern(pattern),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(pattern)));
  const std::string missing_dir = TestDir() + "/absent/train_*.bin";
  EXPECT_THAT(ExpandShardPattern(missing_dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing_dir)));
}

}  // namespace
}  // namespace dstrain::data
