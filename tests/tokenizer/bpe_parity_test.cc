// BpeTokenizer against Hugging Face `tokenizers`: every id of every case in reference.json (made by
// make_tokenizer.py, which also checks the vocab.json + merges.txt ids against transformers' slow
// GPT2Tokenizer), Tiny Shakespeare's ids by count and SHA-256, decoding back to the text, and
// encoding in chunks cut at SafeSplit giving the same ids as encoding at once.
#include <openssl/evp.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/data/bpe_tokenizer.h"

namespace dstrain::data {
namespace {

using ::dstrain::testing::IsOk;
using nlohmann::json;

constexpr char kDir[] = "tests/tokenizer/";  // runfiles-relative

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// tokenizer.json changed the way make_tokenizer.py's variants() changes it.
std::string Variant(const std::string& name) {
  json spec = json::parse(ReadFile(absl::StrCat(kDir, "tokenizer.json")));
  if (name == "prefix_space") spec["pre_tokenizer"]["add_prefix_space"] = true;
  if (name == "no_regex") spec["pre_tokenizer"]["use_regex"] = false;
  if (name == "ignore_merges") spec["model"]["ignore_merges"] = true;
  if (name == "legacy_merges") {  // the "a b" strings of tokenizers < 0.20: the same model
    for (json& m : spec["model"]["merges"]) {
      m = absl::StrCat(m[0].get<std::string>(), " ", m[1].get<std::string>());
    }
  }
  return spec.dump();
}

BpeTokenizer Load(const std::string& variant) {
  absl::StatusOr<BpeTokenizer> t;
  if (variant == "vocab_merges") {
    t = BpeTokenizer::LoadVocabMerges(absl::StrCat(kDir, "vocab.json"),
                                      absl::StrCat(kDir, "merges.txt"));
  } else if (variant == "base") {
    t = BpeTokenizer::LoadTokenizerJson(absl::StrCat(kDir, "tokenizer.json"));
  } else {
    t = BpeTokenizer::FromTokenizerJson(variant, Variant(variant));
  }
  EXPECT_THAT(t, IsOk()) << variant;
  return *std::move(t);
}

std::string IdsSha256(const std::vector<uint16_t>& ids) {
  std::string bytes;
  for (uint16_t id : ids) {
    bytes.push_back(static_cast<char>(id & 0xFF));
    bytes.push_back(static_cast<char>(id >> 8));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), length));
}

// The first index where two id lists differ, for a readable failure.
std::string FirstDifference(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return absl::StrCat("first difference at index ", i, " (got ",
                      i < got.size() ? absl::StrCat(got[i]) : "end", ", want ",
                      i < want.size() ? absl::StrCat(want[i]) : "end", ")");
}

const json& Reference() {
  static const json* const reference =
      new json(json::parse(ReadFile(absl::StrCat(kDir, "reference.json"))));
  return *reference;
}

class ParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParityTest, EveryCaseMatchesTokenizersExactly) {
  const std::string variant = GetParam();
  // legacy_merges is the base model with its merges written the old way.
  const std::string reference_variant = variant == "legacy_merges" ? "base" : variant;
  BpeTokenizer tokenizer = Load(variant);
  EXPECT_EQ(tokenizer.vocab_size(), Reference()["vocab_size"].get<int>());
  int checked = 0;
  for (const json& c : Reference()["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<uint16_t> want = c["ids"][reference_variant].get<std::vector<uint16_t>>();
    const std::vector<uint16_t> got = tokenizer.Encode(text);
    EXPECT_EQ(got, want) << variant << ", " << c["name"] << ": \"" << absl::CEscape(text)
                         << "\": " << FirstDifference(got, want);
    // With add_prefix_space the added spaces decode too (as in `tokenizers`): no round trip.
    if (variant != "prefix_space") {
      EXPECT_EQ(tokenizer.Decode(got), text) << variant << ", " << c["name"];
    }
    ++checked;
  }
  EXPECT_GT(checked, 40);
}

TEST_P(ParityTest, TinyShakespeareMatchesByCountAndDigest) {
  const std::string variant = GetParam();
  const std::string reference_variant =
      variant == "legacy_merges" || variant == "vocab_merges" ? "base" : variant;
  if (!Reference()["tinyshakespeare"].contains(reference_variant)) GTEST_SKIP();
  BpeTokenizer tokenizer = Load(variant);
  const std::string text = ReadFile("deploy/local/demo/tinyshakespeare.txt");
  ASSERT_EQ(text.size(), 1115394u);
  const std::vector<uint16_t> ids = tokenizer.Encode(text);
  const json& want = Reference()["tinyshakespeare"][reference_variant];
  EXPECT_EQ(ids.size(), want["count"].get<size_t>());
  EXPECT_EQ(IdsSha256(ids), want["sha256"].get<std::string>());
  // EXPECT_TRUE: gtest would diff two megabytes of text line by line.
  if (variant != "prefix_space") {
    EXPECT_TRUE(tokenizer.Decode(ids) == text);
  }
}

// Encoding chunk by chunk, each cut at SafeSplit as `dstrain prepare` does, gives the ids of
// encoding at once, also with added tokens near the cuts and a prefix space to suppress.
TEST_P(ParityTest, ChunkedEncodingEqualsWhole) {
  const std::string variant = GetParam();
  if (variant == "no_regex") GTEST_SKIP() << "no safe split points without the regex";
  BpeTokenizer tokenizer = Load(variant);
  std::string text = ReadFile(absl::StrCat(kDir, "corpus.txt"));
  for (int i = 0; i < 20; ++i)
    absl::StrAppend(&text, "word", i, " <|endoftext|>x", i, "<|endoftext|> ");
  text += ReadFile("deploy/local/demo/tinyshakespeare.txt").substr(0, 20000);
  // No spaces at all: the cuts can only be after line breaks.
  for (int i = 0; i < 30; ++i) {
    text += "\xE4\xB8\x9C\xE4\xBA\xAC\xE9\x83\xBD\xE3\x80\x82\n\xE4\xB8\xAD\xE6\x96\x87\n\n";
  }
  const std::vector<uint16_t> whole = tokenizer.Encode(text);
  for (const size_t chunk : {size_t{5}, size_t{64}, size_t{4096}}) {
    std::vector<uint16_t> ids;
    std::string buffer;
    bool continuation = false;
    for (size_t pos = 0; pos < text.size(); pos += chunk) {
      const size_t searched = buffer.size() >= 4 ? buffer.size() - 4 : 0;
      buffer.append(text, pos, chunk);
      const size_t cut = tokenizer.SafeSplit(buffer, searched);
      if (cut == 0) continue;
      tokenizer.EncodeAppend(absl::string_view(buffer).substr(0, cut), continuation, ids);
      continuation = true;
      buffer.erase(0, cut);
    }
    tokenizer.EncodeAppend(buffer, continuation, ids);
    EXPECT_EQ(ids, whole) << variant << ", chunks of " << chunk << ": "
                          << FirstDifference(ids, whole);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ParityTest,
                         ::testing::Values("base", "prefix_space", "no_regex", "ignore_merges",
                                           "legacy_merges", "vocab_merges"));

// The references themselves were made by the pinned versions the docs name.
TEST(Reference, NamesItsGenerator) {
  EXPECT_EQ(Reference()["generator"], "tests/tokenizer/make_tokenizer.py");
  EXPECT_EQ(Reference()["tokenizers_version"], "0.22.2");
  EXPECT_EQ(Reference()["transformers_version"], "4.57.6");
}

}  // namespace
}  // namespace dstrain::data
