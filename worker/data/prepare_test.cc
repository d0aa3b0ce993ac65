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
#include "worker/data/bpe_tokenizer.h"
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

TEST(PrepareText, ByteLevelRecordsItsTokenizer) {
  const std::string dir = TestDir();
  const std::string text_path = WriteText(dir + "/in.txt", "hello world");
  absl::StatusOr<PrepareSummary> summary = PrepareText(text_path, dir + "/out");
  ASSERT_THAT(summary, IsOk());
  EXPECT_EQ(summary->tokenizer, "byte-level");
  EXPECT_EQ(summary->vocab_size, 256);
  EXPECT_EQ(summary->tokenizer_file, dir + "/out/tokenizer.txt");
  absl::StatusOr<TokenizerInfo> info = ReadTokenizerInfo(dir + "/out");
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->kind, "byte");
  EXPECT_EQ(info->vocab_size, 256);
  EXPECT_TRUE(info->sha256.empty());
}

// The test tokenizer of //tests/tokenizer (a byte-level BPE of 2048 ids trained on Tiny
// Shakespeare), runfiles-relative.
constexpr char kTokenizerJson[] = "tests/tokenizer/tokenizer.json";
constexpr char kVocabJson[] = "tests/tokenizer/vocab.json";
constexpr char kMergesTxt[] = "tests/tokenizer/merges.txt";

std::vector<uint16_t> ReadShards(const std::vector<std::string>& paths) {
  std::vector<uint16_t> ids;
  for (const std::string& path : paths) {
    absl::StatusOr<TokenShard> shard = TokenShard::Open(path);
    EXPECT_THAT(shard, IsOk());
    if (shard.ok()) ids.insert(ids.end(), shard->tokens().begin(), shard->tokens().end());
  }
  return ids;
}

TEST(PrepareText, BpeShardsHoldTheIdsOfEachSplitEncodedWhole) {
  const std::string dir = TestDir();
  const std::string text_path = "deploy/local/demo/tinyshakespeare.txt";
  const std::string text = ReadFile(text_path);
  absl::StatusOr<BpeTokenizer> tokenizer = BpeTokenizer::LoadTokenizerJson(kTokenizerJson);
  ASSERT_THAT(tokenizer, IsOk());
  const std::vector<uint16_t> want_train = tokenizer->Encode(text.substr(0, 1003854));
  const std::vector<uint16_t> want_val = tokenizer->Encode(text.substr(1003854));

  // Small read chunks and shards, so that both cuts happen many times; then the defaults.
  PrepareOptions options;
  options.tokenizer_json = kTokenizerJson;
  options.shard_tokens = 50000;
  options.read_chunk_bytes = 777;
  for (const std::string& out : {dir + "/small", dir + "/default"}) {
    absl::StatusOr<PrepareSummary> summary = PrepareText(text_path, out, options);
    ASSERT_THAT(summary, IsOk());
    EXPECT_EQ(summary->train_bytes, 1003854u);  // nanoGPT's cut: ASCII text, no move
    EXPECT_EQ(summary->val_bytes, 111540u);
    EXPECT_EQ(summary->train_tokens, want_train.size());
    EXPECT_EQ(summary->val_tokens, want_val.size());
    EXPECT_TRUE(ReadShards(summary->train_files) == want_train);
    EXPECT_TRUE(ReadShards(summary->val_files) == want_val);
    EXPECT_EQ(summary->tokenizer, "BPE (tokenizer.json)");
    EXPECT_EQ(summary->vocab_size, 2048);

    absl::StatusOr<TokenizerInfo> info = ReadTokenizerInfo(out);
    ASSERT_THAT(info, IsOk());
    EXPECT_EQ(info->kind, "bpe");
    EXPECT_EQ(info->format, "tokenizer.json");
    EXPECT_EQ(info->vocab_size, 2048);
    ASSERT_EQ(info->sha256.size(), 1u);
    EXPECT_EQ(info->sha256[0].first, tokenizer->sha256()[0]);
    EXPECT_EQ(info->sha256[0].second, kTokenizerJson);
    options = PrepareOptions();
    options.tokenizer_json = kTokenizerJson;
  }
  EXPECT_EQ(tokenizer->Decode(
                ReadShards(PrepareText(text_path, dir + "/again", options).value().val_files)),
            text.substr(1003854));
}

TEST(PrepareText, Gpt2FilesGiveTheSameIdsAsTokenizerJson) {
  const std::string dir = TestDir();
  const std::string text_path = "deploy/local/demo/tinyshakespeare.txt";
  PrepareOptions json_options;
  json_options.tokenizer_json = kTokenizerJson;
  PrepareOptions gpt2_options;
  gpt2_options.vocab_json = kVocabJson;
  gpt2_options.merges_txt = kMergesTxt;
  absl::StatusOr<PrepareSummary> a = PrepareText(text_path, dir + "/json", json_options);
  absl::StatusOr<PrepareSummary> b = PrepareText(text_path, dir + "/gpt2", gpt2_options);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_TRUE(ReadShards(a->train_files) == ReadShards(b->train_files));
  EXPECT_TRUE(ReadShards(a->val_files) == ReadShards(b->val_files));
  EXPECT_EQ(b->tokenizer, "BPE (vocab.json + merges.txt)");
  absl::StatusOr<TokenizerInfo> info = ReadTokenizerInfo(dir + "/gpt2");
  ASSERT_THAT(info, IsOk());
  ASSERT_EQ(info->sha256.size(), 2u);
  EXPECT_EQ(info->sha256[0].second, kVocabJson);
  EXPECT_EQ(info->sha256[1].second, kMergesTxt);
}

TEST(PrepareText, BpeCutMovesOutOfAUtf8Character) {
  const std::string dir = TestDir();
  // "a" then ten "é" (C3 A9): 21 bytes; int(21 * 0.9) = 18 is the A9 of the ninth é.
  std::string text = "a";
  for (int i = 0; i < 10; ++i) text += "\xC3\xA9";
  const std::string text_path = WriteText(dir + "/in.txt", text);
  PrepareOptions options;
  options.tokenizer_json = kTokenizerJson;
  absl::StatusOr<PrepareSummary> summary = PrepareText(text_path, dir + "/out", options);
  ASSERT_THAT(summary, IsOk());
  EXPECT_EQ(summary->train_bytes, 19u);
  EXPECT_EQ(summary->val_bytes, 2u);
  absl::StatusOr<BpeTokenizer> tokenizer = BpeTokenizer::LoadTokenizerJson(kTokenizerJson);
  ASSERT_THAT(tokenizer, IsOk());
  EXPECT_EQ(tokenizer->Decode(ReadShards(summary->val_files)), "\xC3\xA9");
  EXPECT_EQ(tokenizer->Decode(ReadShards(summary->train_files)), text.substr(0, 19));
}

TEST(PrepareText, BpeRefusesStaleShardsBeforeWritingAny) {
  const std::string dir = TestDir();
  PrepareOptions options;
  options.tokenizer_json = kTokenizerJson;
  options.shard_tokens = 10;
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += "word ";
  ASSERT_THAT(PrepareText(WriteText(dir + "/long.txt", long_text), dir + "/out", options), IsOk());
  EXPECT_THAT(PrepareText(WriteText(dir + "/short.txt", "a few words here"), dir + "/out", options),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("train_000001.bin")));
  absl::StatusOr<TokenShard> first = TokenShard::Open(dir + "/out/train_000000.bin");
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(first->size(), 10u);  // still the long run's
}

TEST(PrepareText, TokenizerErrorsNameTheFileAndCreateNothing) {
  const std::string dir = TestDir();
  const std::string text_path = WriteText(dir + "/in.txt", "hello world");
  PrepareOptions options;
  options.tokenizer_json = dir + "/missing.json";
  EXPECT_THAT(PrepareText(text_path, dir + "/out", options),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir + "/missing.json")));
  options.tokenizer_json = WriteText(dir + "/bad.json", "{\"model\": {\"type\": \"Unigram\"}}");
  EXPECT_THAT(
      PrepareText(text_path, dir + "/out", options),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(dir + "/bad.json: pre_tokenizer")));
  struct stat st;
  EXPECT_NE(::stat((dir + "/out").c_str(), &st), 0);  // nothing created

  options = PrepareOptions();
  options.tokenizer_json = kTokenizerJson;
  options.vocab_json = kVocabJson;
  options.merges_txt = kMergesTxt;
  EXPECT_THAT(PrepareText(text_path, dir + "/out", options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not both")));
  options = PrepareOptions();
  options.vocab_json = kVocabJson;
  EXPECT_THAT(PrepareText(text_path, dir + "/out", options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("merges.txt")));
}

TEST(PrepareText, BpeRefusesToHoldAnUncuttableStretchPastTheLimit) {
  const std::string dir = TestDir();
  const std::string text_path = WriteText(dir + "/in.txt", std::string(5000, 'x') + " y z");
  PrepareOptions options;
  options.tokenizer_json = kTokenizerJson;
  options.read_chunk_bytes = 100;
  options.max_unsplit_bytes = 1000;
  EXPECT_THAT(PrepareText(text_path, dir + "/out", options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr(text_path), HasSubstr("more than 1000 bytes"))));
  options.max_unsplit_bytes = 10000;
  EXPECT_THAT(PrepareText(text_path, dir + "/out", options), IsOk());
}

TEST(ReadTokenizerInfo, Errors) {
  const std::string dir = TestDir();
  EXPECT_THAT(ReadTokenizerInfo(dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir + "/tokenizer.txt")));
  WriteText(dir + "/tokenizer.txt", "tokenizer bpe\nvocab_size lots\n");
  EXPECT_THAT(ReadTokenizerInfo(dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(dir + "/tokenizer.txt:2")));
  WriteText(dir + "/tokenizer.txt", "# only a comment\n");
  EXPECT_THAT(ReadTokenizerInfo(dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocab_size")));
}

}  // namespace
}  // namespace dstrain::data
