#include "common/flags/flags.h"

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"

namespace dstrain::flags {
namespace {

using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ParseArgs, FlagsAndPositionals) {
  auto p = ParseArgs({"job.json", "--world", "4", "--metrics-out=m.jsonl", "--follow", "x"},
                     {"world", "metrics-out"}, {"follow"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->positional, (std::vector<std::string>{"job.json", "x"}));
  EXPECT_EQ(*p->GetInt("world", 1), 4);
  EXPECT_EQ(p->Get("metrics-out"), "m.jsonl");
  EXPECT_TRUE(p->Has("follow"));
  EXPECT_EQ(*p->GetInt("threads", 7), 7);
}

TEST(ParseArgs, Int64HoldsByteCounts) {
  auto p = ParseArgs({"--limit", "68719476736", "--bad", "1e3"}, {"limit", "bad"}, {});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p->GetInt64("limit", 0), int64_t{1} << 36);
  EXPECT_EQ(*p->GetInt64("absent", -5), -5);
  EXPECT_THAT(p->GetInt64("bad", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'1e3'")));
  EXPECT_THAT(p->GetInt("limit", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

TEST(ParseArgs, ErrorsNameTheFlag) {
  EXPECT_THAT(ParseArgs({"--wrold", "2"}, {"world"}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--wrold")));
  EXPECT_THAT(ParseArgs({"--world"}, {"world"}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs a value")));
  EXPECT_THAT(ParseArgs({"--follow=yes"}, {}, {"follow"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("takes no value")));
  auto p = ParseArgs({"--world", "two"}, {"world"}, {});
  ASSERT_TRUE(p.ok());
  EXPECT_THAT(p->GetInt("world", 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'two'")));
}

}  // namespace
}  // namespace dstrain::flags
