#include "worker/data/bpe_tokenizer.h"

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
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
using nlohmann::json;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// GPT-2's byte symbols, written independently of bpe_tokenizer.cc: bytes 0x21-0x7E, 0xA1-0xAC
// and 0xAE-0xFF are themselves, the rest U+0100... in byte order.
std::string Symbol(int byte) {
  static const std::vector<std::string>* const symbols = [] {
    auto* s = new std::vector<std::string>(256);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const int c = printable ? b : next++;
      std::string utf8;
      if (c < 0x80) {
        utf8.push_back(static_cast<char>(c));
      } else {
        utf8.push_back(static_cast<char>(0xC0 | (c >> 6)));
        utf8.push_back(static_cast<char>(0x80 | (c & 0x3F)));
      }
      (*s)[b] = utf8;
    }
    return s;
  }();
  return (*symbols)[byte];
}

// A small byte-level BPE: ids 0-255 the bytes, then "he" 256, "ll" 257, "hell" 258, "Ġw" 259,
// "hello" 260, and the added token <|endoftext|> 261.
json SmallSpec() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[Symbol(b)] = b;
  vocab["he"] = 256;
  vocab["ll"] = 257;
  vocab["hell"] = 258;
  vocab["Ġw"] = 259;
  vocab["hello"] = 260;
  return json{
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array({{{"id", 261},
                                     {"content", "<|endoftext|>"},
                                     {"single_word", false},
                                     {"lstrip", false},
                                     {"rstrip", false},
                                     {"normalized", false},
                                     {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", json::array({json::array({"h", "e"}), "l l", json::array({"he", "ll"}),
                                json::array({"Ġ", "w"}), json::array({"hell", "o"})})}}},
  };
}

absl::StatusOr<BpeTokenizer> FromSpec(const json& spec) {
  return BpeTokenizer::FromTokenizerJson("tok.json", spec.dump());
}

std::string TestFile(const std::string& name, const std::string& contents) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

TEST(BpeTokenizer, MergesByRankAndMatchesAddedTokensWhole) {
  absl::StatusOr<BpeTokenizer> t = FromSpec(SmallSpec());
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->vocab_size(), 262);
  EXPECT_EQ(t->format(), "tokenizer.json");
  // "hello" -> he ll o -> hell o -> hello; " world" -> Ġw o r l d.
  EXPECT_THAT(t->Encode("hello world"), ElementsAre(260, 259, 'o', 'r', 'l', 'd'));
  EXPECT_THAT(t->Encode("hi<|endoftext|>hello"), ElementsAre('h', 'i', 261, 260));
  // Not quite the token: plain bytes.
  EXPECT_EQ(t->Encode("<|endoftext|").size(), 12u);
  EXPECT_EQ(t->Decode(t->Encode("hi<|endoftext|>hello")), "hi<|endoftext|>hello");
  EXPECT_EQ(t->TokenId("hello"), 260);
  EXPECT_EQ(t->TokenId(" w"), 259);
  EXPECT_EQ(t->TokenId("<|endoftext|>"), 261);
  EXPECT_EQ(t->TokenId("nope"), -1);
}

TEST(BpeTokenizer, AnyBytesRoundTripAndUnknownIdsDecodeAsReplacement) {
  absl::StatusOr<BpeTokenizer> t = FromSpec(SmallSpec());
  ASSERT_THAT(t, IsOk());
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  all += "\xFF\xFE broken \xC3 utf-8 \xED\xA0\x80";
  EXPECT_EQ(t->Decode(t->Encode(all)), all);
  const std::vector<uint16_t> ids = {260, 262, 65535};
  EXPECT_EQ(t->Decode(ids), "hello\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(BpeTokenizer, CopiesEncodeIndependently) {
  absl::StatusOr<BpeTokenizer> t = FromSpec(SmallSpec());
  ASSERT_THAT(t, IsOk());
  t->Encode("hello hello");  // fills the cache
  BpeTokenizer copy = *t;
  EXPECT_EQ(copy.Encode("hello hello"), t->Encode("hello hello"));
}

TEST(BpeTokenizer, PrefixSpaceGoesBeforeEachSegment) {
  json spec = SmallSpec();
  spec["pre_tokenizer"]["add_prefix_space"] = true;
  absl::StatusOr<BpeTokenizer> t = FromSpec(spec);
  ASSERT_THAT(t, IsOk());
  // " w" merges; so does the prefixed "w" after the added token.
  EXPECT_THAT(t->Encode("w<|endoftext|>w"), ElementsAre(259, 261, 259));
  std::vector<uint16_t> ids;
  t->EncodeAppend("w", /*continuation=*/true, ids);
  EXPECT_THAT(ids, ElementsAre('w'));
}

TEST(BpeTokenizer, SafeSplitIsBeforeASpaceAfterAWordOrAfterALoneLineBreak) {
  absl::StatusOr<BpeTokenizer> t = FromSpec(SmallSpec());
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->SafeSplit("hello world again"), 11u);
  EXPECT_EQ(t->SafeSplit("hello.  "), 0u);
  EXPECT_EQ(t->SafeSplit(""), 0u);
  // "東京。" is 9 bytes; after its line break.
  EXPECT_EQ(t->SafeSplit("\xE6\x9D\xB1\xE4\xBA\xAC\xE3\x80\x82\n\xE6\x97\xA5"), 10u);
  // Not after two line breaks, CRLF, before whitespace (U+3000, even cut short) or a token.
  EXPECT_EQ(t->SafeSplit("a\n\nb"), 0u);
  EXPECT_EQ(t->SafeSplit("a\r\nb"), 0u);
  EXPECT_EQ(t->SafeSplit("a\n\xE3\x80\x80"
                         "b"),
            0u);
  EXPECT_EQ(t->SafeSplit("a\n\xE3\x80"), 0u);
  EXPECT_EQ(t->SafeSplit("a\n<|endoftext|>"), 0u);
  EXPECT_EQ(t->SafeSplit("a\n.<|endoftext|>"), 2u);
}

TEST(BpeTokenizer, LoadsGpt2Files) {
  const json spec = SmallSpec();
  std::string merges = "#version: 0.2\nh e\nl l\r\nhe ll\nĠ w\nhell o\n";
  json vocab = spec["model"]["vocab"];
  vocab["<|endoftext|>"] = 261;
  const std::string vocab_path = TestFile("vocab.json", vocab.dump());
  const std::string merges_path = TestFile("merges.txt", merges);
  absl::StatusOr<BpeTokenizer> t = BpeTokenizer::LoadVocabMerges(vocab_path, merges_path);
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->format(), "vocab.json + merges.txt");
  EXPECT_THAT(t->files(), ElementsAre(vocab_path, merges_path));
  ASSERT_EQ(t->sha256().size(), 2u);
  EXPECT_EQ(t->sha256()[0].size(), 64u);
  // <|endoftext|> is special in GPT-2's files.
  EXPECT_THAT(t->Encode("hello<|endoftext|> world"),
              ElementsAre(260, 261, 259, 'o', 'r', 'l', 'd'));
}

TEST(BpeTokenizer, MissingFilesAreNotFoundNamingThem) {
  EXPECT_THAT(BpeTokenizer::LoadTokenizerJson("/nonexistent/tok.json"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/tok.json")));
  const std::string vocab = TestFile("v.json", "{}");
  EXPECT_THAT(BpeTokenizer::LoadVocabMerges(vocab, "/nonexistent/merges.txt"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/merges.txt")));
}

// Each bad input: what to change in SmallSpec, and what the message must say.
struct BadSpec {
  std::string name;
  void (*mutate)(json&);
  std::string field;
};

TEST(BpeTokenizer, RefusesWhatItDoesNotImplementNamingTheField) {
  const std::vector<BadSpec> cases = {
      {"model type", [](json& s) { s["model"]["type"] = "WordPiece"; }, "model.type"},
      {"normalizer",
       [](json& s) {
         s["normalizer"] = {{"type", "NFC"}};
       },
       "normalizer"},
      {"pre-tokenizer",
       [](json& s) {
         s["pre_tokenizer"] = {{"type", "Whitespace"}};
       },
       "pre_tokenizer.type"},
      {"no pre-tokenizer", [](json& s) { s["pre_tokenizer"] = nullptr; }, "pre_tokenizer"},
      {"prefix flag", [](json& s) { s["pre_tokenizer"]["add_prefix_space"] = "yes"; },
       "pre_tokenizer.add_prefix_space"},
      {"decoder",
       [](json& s) {
         s["decoder"] = {{"type", "WordPiece"}};
       },
       "decoder.type"},
      {"post-processor",
       [](json& s) {
         s["post_processor"] = {{"type", "TemplateProcessing"}};
       },
       "post_processor.type"},
      {"truncation",
       [](json& s) {
         s["truncation"] = {{"max_length", 8}};
       },
       "truncation"},
      {"dropout", [](json& s) { s["model"]["dropout"] = 0.1; }, "model.dropout"},
      {"subword prefix", [](json& s) { s["model"]["continuing_subword_prefix"] = "##"; },
       "model.continuing_subword_prefix"},
      {"no vocab", [](json& s) { s["model"].erase("vocab"); }, "model.vocab"},
      {"vocab not an object", [](json& s) { s["model"]["vocab"] = json::array(); }, "model.vocab"},
      {"id not an integer", [](json& s) { s["model"]["vocab"]["he"] = "256"; },
       "model.vocab[\"he\"]"},
      {"id too large", [](json& s) { s["model"]["vocab"]["he"] = 70000; },
       "model.vocab[\"he\"]: id 70000 is outside [0, 65535]"},
      {"negative id", [](json& s) { s["model"]["vocab"]["he"] = -1; }, "model.vocab[\"he\"]"},
      {"duplicate id", [](json& s) { s["model"]["vocab"]["xx"] = 256; }, "id 256 is given to both"},
      {"missing byte", [](json& s) { s["model"]["vocab"].erase("Ċ"); }, "byte 0x0A"},
      {"merge of an unknown token",
       [](json& s) {
         s["model"]["merges"][1] = json::array({"l", "zz"});
       },
       "model.merges[1]: \"zz\" is not in tok.json: model.vocab"},
      {"merge into an unknown token", [](json& s) { s["model"]["merges"][1] = "l o"; },
       "model.merges[1]: the merged token \"lo\" is not in"},
      {"malformed merge", [](json& s) { s["model"]["merges"][0] = "h e x"; }, "model.merges[0]"},
      {"merge of three",
       [](json& s) {
         s["model"]["merges"][0] = json::array({"h", "e", "l"});
       },
       "model.merges[0]"},
      {"lstrip", [](json& s) { s["added_tokens"][0]["lstrip"] = true; },
       "added_tokens[0].lstrip: true is not supported"},
      {"added id clash", [](json& s) { s["added_tokens"][0]["id"] = 256; },
       "added_tokens[0]: id 256 of \"<|endoftext|>\" is already taken"},
      {"added token in vocab under another id",
       [](json& s) { s["added_tokens"][0]["content"] = "he"; },
       "added_tokens[0]: \"he\" has id 256"},
      {"empty added token", [](json& s) { s["added_tokens"][0]["content"] = ""; },
       "added_tokens[0].content"},
      {"top level", [](json& s) { s = json::array(); }, "top"},
  };
  for (const BadSpec& c : cases) {
    json spec = SmallSpec();
    c.mutate(spec);
    EXPECT_THAT(FromSpec(spec), StatusIs(absl::StatusCode::kInvalidArgument,
                                         AllOf(HasSubstr("tok.json"), HasSubstr(c.field))))
        << c.name;
  }
}

TEST(BpeTokenizer, RefusesVocabulariesTooLargeForUint16Shards) {
  json spec = SmallSpec();
  for (int i = 0; i < 65537 - 261; ++i) spec["model"]["vocab"][absl::StrCat("t", i)] = 262 + i;
  EXPECT_THAT(FromSpec(spec), StatusIs(absl::StatusCode::kInvalidArgument,
                                       AllOf(HasSubstr("tok.json: model.vocab"),
                                             HasSubstr("65537 tokens"), HasSubstr("uint16"))));
}

TEST(BpeTokenizer, RefusesMalformedJsonAndMerges) {
  EXPECT_THAT(BpeTokenizer::FromTokenizerJson("tok.json", "{\"model\": "),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tok.json: not valid JSON"), HasSubstr("line 1"))));
  EXPECT_THAT(BpeTokenizer::FromTokenizerJson("tok.json", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tok.json")));
  const std::string vocab = SmallSpec()["model"]["vocab"].dump();
  EXPECT_THAT(BpeTokenizer::FromVocabMerges("v.json", "[1, 2]", "m.txt", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("v.json")));
  EXPECT_THAT(BpeTokenizer::FromVocabMerges("v.json", vocab, "m.txt", "#version: 0.2\nh e\nhe\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("m.txt:3")));
  EXPECT_THAT(BpeTokenizer::FromVocabMerges("v.json", vocab, "m.txt", "h e\nq z\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("m.txt:2"), HasSubstr("\"qz\" is not in v.json"))));
  // Invalid UTF-8 in the JSON is refused by the parser, not passed on.
  EXPECT_THAT(BpeTokenizer::FromVocabMerges("v.json", "{\"\xFF\": 1}", "m.txt", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("v.json")));
}

}  // namespace
}  // namespace dstrain::data
