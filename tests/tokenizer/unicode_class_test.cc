// gpt2_split's Unicode classes against `tokenizers`' own, for every code point:
// unicode_classes.json is what make_tokenizer.py probed through the ByteLevel pre-tokenizer
// (letter, number, whitespace or other for each of the 1,112,064 scalar values).
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "worker/data/gpt2_split.h"

namespace dstrain::data {
namespace {

TEST(UnicodeClass, EveryCodePointAsTokenizersClassesIt) {
  std::ifstream in("tests/tokenizer/unicode_classes.json", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json classes = nlohmann::json::parse(ss.str());
  uint64_t checked = 0;
  int mismatched_ranges = 0;
  for (const nlohmann::json& r : classes["ranges"]) {
    const char32_t first = r[0].get<uint32_t>();
    const char32_t last = r[1].get<uint32_t>();
    const std::string k = r[2].get<std::string>();
    const CharClass want = k == "L"   ? CharClass::kLetter
                           : k == "N" ? CharClass::kNumber
                           : k == "S" ? CharClass::kSpace
                                      : CharClass::kOther;
    bool reported = false;
    for (char32_t cp = first; cp <= last; ++cp, ++checked) {
      if (ClassOf(cp) != want && !reported) {
        ADD_FAILURE() << absl::StrFormat("U+%04X (in U+%04X..U+%04X): want class %s, got %d", cp,
                                         first, last, k, static_cast<int>(ClassOf(cp)));
        reported = true;  // one line per range
        ++mismatched_ranges;
      }
    }
  }
  EXPECT_EQ(checked, 0x110000u - 0x800u);  // all scalar values: no surrogates
  EXPECT_EQ(mismatched_ranges, 0);
}

TEST(Utf8, DecodesWellFormedAndRefusesTheRest) {
  char32_t cp;
  EXPECT_EQ(DecodeUtf8("a", &cp), 1);
  EXPECT_EQ(cp, U'a');
  EXPECT_EQ(DecodeUtf8("\xC3\xA9", &cp), 2);
  EXPECT_EQ(cp, U'\u00e9');
  EXPECT_EQ(DecodeUtf8("\xE6\x9D\xB1", &cp), 3);
  EXPECT_EQ(cp, U'\u6771');
  EXPECT_EQ(DecodeUtf8("\xF0\x9F\x98\x80", &cp), 4);
  EXPECT_EQ(cp, U'\U0001F600');
  for (const char* bad : {"\x80", "\xC0\x80", "\xC3", "\xE0\x80\x80", "\xED\xA0\x80",
                          "\xF4\x90\x80\x80", "\xF0\x9F\x98", "\xFF"}) {
    EXPECT_EQ(DecodeUtf8(bad, &cp), 1) << bad;
    EXPECT_EQ(cp, kInvalidCodePoint);
  }
}

std::vector<std::string> Split(absl::string_view text) {
  std::vector<absl::string_view> pieces;
  SplitGpt2(text, pieces);
  return std::vector<std::string>(pieces.begin(), pieces.end());
}

TEST(SplitGpt2, FollowsTheRegex) {
  using V = std::vector<std::string>;
  EXPECT_EQ(Split(""), V{});
  EXPECT_EQ(Split("Hello  world\t\tfoo \n\nbar"),
            (V{"Hello", " ", " world", "\t", "\t", "foo", " \n", "\n", "bar"}));
  EXPECT_EQ(Split("it's 'S ''s I'll"), (V{"it", "'s", " '", "S", " ''", "s", " I", "'ll"}));
  EXPECT_EQ(Split(" 12abc!? x  "), (V{" 12", "abc", "!?", " x", "  "}));
  // Invalid UTF-8 bytes are "other", one code point each.
  EXPECT_EQ(Split("a\xFF\xFE b"), (V{"a", "\xFF\xFE", " b"}));
  EXPECT_EQ(Split("caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC"),
            (V{"caf\xC3\xA9", " \xE6\x9D\xB1\xE4\xBA\xAC"}));
}

}  // namespace
}  // namespace dstrain::data
