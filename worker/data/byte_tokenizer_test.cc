#include "worker/data/byte_tokenizer.h"

#include <string>
#include <vector>

#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::data {
namespace {

using ::dstrain::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ByteTokenizer, EveryByteRoundTrips) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::vector<uint16_t> tokens = ByteTokenizer::Encode(all);
  ASSERT_EQ(tokens.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(tokens[b], b);
  EXPECT_EQ(ByteTokenizer::Decode(tokens), all);
  EXPECT_EQ(*ByteTokenizer::DecodeStrict(tokens), all);
}

TEST(ByteTokenizer, ZeroAnd255AreTokensNotTerminators) {
  const std::string text("a\0b\xff", 4);
  EXPECT_THAT(ByteTokenizer::Encode(text), ElementsAre('a', 0, 'b', 255));
  EXPECT_EQ(ByteTokenizer::Decode(ByteTokenizer::Encode(text)), text);
}

TEST(ByteTokenizer, Utf8IsSplitIntoBytesAndRejoined) {
  const std::string text = "naïve — 日本語 🙂";
  const std::vector<uint16_t> tokens = ByteTokenizer::Encode(text);
  EXPECT_EQ(tokens.size(), text.size());
  EXPECT_EQ(tokens[2], 0xC3);  // ï = C3 AF
  EXPECT_EQ(tokens[3], 0xAF);
  EXPECT_EQ(ByteTokenizer::Decode(tokens), text);
}

TEST(ByteTokenizer, EmptyText) {
  EXPECT_TRUE(ByteTokenizer::Encode("").empty());
  EXPECT_EQ(ByteTokenizer::Decode({}), "");
}

TEST(ByteTokenizer, OutOfVocabIdsDecodeToReplacementOrAreReported) {
  const std::vector<uint16_t> tokens = {'h', 300, 'i', 65535};
  EXPECT_EQ(ByteTokenizer::Decode(tokens), "h\xEF\xBF\xBDi\xEF\xBF\xBD");
  EXPECT_THAT(ByteTokenizer::DecodeStrict(tokens),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("300"), HasSubstr("index 1"))));
  const std::vector<uint16_t> edge = {255, 256};
  EXPECT_EQ(ByteTokenizer::Decode(edge), "\xff\xEF\xBF\xBD");
}

}  // namespace
}  // namespace dstrain::data
