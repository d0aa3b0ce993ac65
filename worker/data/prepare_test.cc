#include "worker/data/prepare.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/data/byte_tokenizer.h"
#include "worker/data/token_shard.h"

namespace dstrain::data {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TestDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string dir =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", info->test_suite_name(), "_", info->name());
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

std::string WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Decodes shards in order and concatenates them.
std::string DecodeShards(const std::vector<std::string>& paths) {
  std::string text;
  for (const std::string& path : paths) {
    absl::StatusOr<TokenShard> shard = TokenShard::Open(path);
    EXPECT_THAT(shard, IsOk());
    if (!shard.ok()) return "";
    text += ByteTokenizer::Decode(shard->tokens());
  }
  return text;
}

std::string SampleText() {
  std::string text;
  for (int i = 0; i < 100; ++i) absl::StrAppend(&text, "line ", i, ": to be, or not — ", "\n");
  text.push_back('\0');
  text.push_back('\xff');
  return text;
}

TEST(PrepareText, SplitsTailForValidationAndRoundTrips) {
  const std::string dir = TestDir();
  const std::string text = SampleText();
  const std::string text_path = WriteText(dir + "/in.txt", text);
  PrepareOptions options;
  options.shard_tokens = 1000;
  absl::StatusOr<PrepareSummary> summary = PrepareText(text_path, dir + "/out", options);
  ASSERT_THAT(summary, IsOk());

  const size_t n = text.size();
  const size_t n_train = static_cast<size_t>(n * 0.9);  // nanoGPT's int(n * 0.9)
  EXPECT_EQ(summary->text_bytes, n);
  EXPECT_EQ(summary->train_tokens, n_train);
  EXPECT_EQ(summary->val_tokens, n - n_train);
  EXPECT_EQ(summary->train_tokens + summary->val_tokens, n);

  // ceil(n_train / 1000) train shards, named in order.
  ASSERT_EQ(summary->train_files.size(), (n_train + 999) / 1000);
  EXPECT_EQ(summary->train_files[0], dir + "/out/train_000000.bin");
  EXPECT_EQ(summary->train_files[1], dir + "/out/train_000001.bin");
  EXPECT_THAT(summary->val_files, ElementsAre(dir + "/out/val_000000.bin"));

  // Every shard but the last of a split is full.
  for (size_t i = 0; i + 1 < summary->train_files.size(); ++i) {
    absl::StatusOr<TokenShard> shard = TokenShard::Open(summary->train_files[i]);
    ASSERT_THAT(shard, IsOk());
    EXPECT_EQ(shard->size(), 1000u);
  }

  EXPECT_EQ(DecodeShards(summary->train_files), text.substr(0, n_train));
  EXPECT_EQ(DecodeShards(summary->val_files), text.substr(n_train));
  EXPECT_EQ(DecodeShards(summary->train_files) + DecodeShards(summary->val_files), text);

  absl::StatusOr<std::vector<std::string>> globbed = ExpandShardPattern(dir + "/out/train_*.bin");
  ASSERT_THAT(globbed, IsOk());
  EXPECT_EQ(*globbed, summary->train_files);
}

TEST(PrepareText, TinyShakespeareMatchesNanoGptSplit) {
  const std::string text_path = "deploy/local/demo/tinyshakespeare.txt";  // runfiles-relative
  const std::string text = ReadFile(text_path);
  ASSERT_EQ(text.size(), 1115394u);
  absl::StatusOr<PrepareSummary> summary = PrepareText(text_path, TestDir() + "/shakespeare");
  ASSERT_THAT(summary, IsOk());
  // nanoGPT's shakespeare_char: "train has 1,003,854 tokens", "val has 111,540 tokens".
  EXPECT_EQ(summary->train_tokens, 1003854u);
  EXPECT_EQ(summary->val_tokens, 111540u);
  EXPECT_EQ(summary->train_files.size(), 1u);
  EXPECT_EQ(DecodeShards(summary->val_files), text.substr(1003854));
  EXPECT_EQ(DecodeShards(summary->train_files), text.substr(0, 1003854));
}

TEST(PrepareText, ZeroValFractionWritesNoValShard) {
  const std::string dir = TestDir();
  const std::string text_path = WriteText(dir + "/in.txt", "hello");
  PrepareOptions options;
  options.val_fraction = 0;
  absl::StatusOr<PrepareSummary> summary = PrepareText(text_path, dir + "/out", options);
  ASSERT_THAT(summary, IsOk());
  EXPECT_EQ(summary->train_tokens, 5u);
  EXPECT_EQ(summary->val_tokens, 0u);
  EXPECT_TRUE(summary->val_files.empty());
  EXPECT_EQ(DecodeShards(summary->train_files), "hello");
}

TEST(PrepareText, RerunOverwritesButRefusesStaleShards) {
  const std::string dir = TestDir();
  PrepareOptions options;
  options.shard_tokens = 10;
  const std::string long_text = WriteText(dir + "/long.txt", std::string(100, 'a'));
  ASSERT_THAT(PrepareText(long_text, dir + "/out", options), IsOk());
  // Same input again: same names, overwritten.
  ASSERT_THAT(PrepareText(long_text, dir + "/out", options), IsOk());
  // A shorter text would leave train_000008.bin behind from the long run.
  const std::string short_text = WriteText(dir + "/short.txt", std::string(50, 'b'));
  EXPECT_THAT(PrepareText(short_text, dir + "/out", options),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(HasSubstr(dir + "/out"), HasSubstr("train_000005.bin"))));
  // Nothing was written by the refused run.
  absl::StatusOr<TokenShard> first = TokenShard::Open(dir + "/out/train_000000.bin");
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(ByteTokenizer::Decode(first->tokens()), std::string(10, 'a'));
}

TEST(PrepareText, Errors) {
  const std::string dir = TestDir();
  EXPECT_THAT(PrepareText(dir + "/missing.txt", dir + "/out"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir + "/missing.txt")));
  const std::string empty = WriteText(dir + "/empty.txt", "");
  EXPECT_THAT(PrepareText(empty, dir + "/out"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(empty)));
  // 5 bytes * 0.9 = 4.5 -> 4 train, 1 val works; 1 byte cannot give both splits a token.
  const std::string one = WriteText(dir + "/one.txt", "x");
  EXPECT_THAT(PrepareText(one, dir + "/out"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(one)));
  const std::string ok = WriteText(dir + "/ok.txt", "hello");
  PrepareOptions bad;
  bad.val_fraction = 1.0;
  EXPECT_THAT(PrepareText(ok, dir + "/out", bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("val_fraction")));
  bad = PrepareOptions();
  bad.shard_tokens = 0;
  EXPECT_THAT(PrepareText(ok, dir + "/out", bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shard_tokens")));
  // The output path is a file.
  EXPECT_THAT(PrepareText(ok, ok), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(ok)));
}

}  // namespace
}  // namespace dstrain::data
