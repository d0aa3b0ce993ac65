// Store credentials: a token opens its own attempt's prefix and nothing else; a token made under
// another secret, for another attempt, or altered in one character is refused; so is a scope that
// is not an attempt's prefix.
#include "coordinator/store/store_credentials.h"

#include <string>

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"

namespace dstrain::coordinator {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;

TEST(StoreCredentials, ATokenOpensItsOwnAttemptOnly) {
  const StoreCredentials mine(std::string(32, 'k'));
  const StoreCredentials theirs(std::string(32, 'q'));
  const std::string scope = StoreCredentials::ScopeOf("job-a", 2);
  EXPECT_EQ(scope, "jobs/job-a/attempt-2");
  const std::string token = mine.TokenFor(scope);
  EXPECT_EQ(token.size(), 64u) << "hex of 32 bytes";
  EXPECT_THAT(mine.Check(scope, token), IsOk());
  EXPECT_THAT(theirs.Check(scope, token),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  EXPECT_THAT(mine.Check(StoreCredentials::ScopeOf("job-a", 3), token),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  EXPECT_THAT(mine.Check(StoreCredentials::ScopeOf("job-b", 2), token),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  std::string altered = token;
  altered[10] = altered[10] == '0' ? '1' : '0';
  EXPECT_THAT(mine.Check(scope, altered),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  EXPECT_THAT(mine.Check(scope, ""), StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  for (const char* bad : {"", "jobs", "jobs/job-a", "jobs//attempt-1", "jobs/job-a/attempt-0",
                          "jobs/job-a/attempt-x", "other/job-a/attempt-1", "jobs/a/attempt-1/x"}) {
    EXPECT_THAT(mine.Check(bad, mine.TokenFor(bad)),
                StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_))
        << bad;
  }
}

TEST(StoreCredentials, KeysBeneathTheScope) {
  EXPECT_TRUE(StoreCredentials::InScope("jobs/a/attempt-1", "jobs/a/attempt-1/rank0"));
  EXPECT_FALSE(StoreCredentials::InScope("jobs/a/attempt-1", "jobs/a/attempt-1"));
  EXPECT_FALSE(StoreCredentials::InScope("jobs/a/attempt-1", "jobs/a/attempt-10/rank0"));
  EXPECT_FALSE(StoreCredentials::InScope("jobs/a/attempt-1", "jobs/a/attempt-1/"));
  EXPECT_FALSE(StoreCredentials::InScope("jobs/a/attempt-1", "jobs/b/attempt-1/x"));
}

}  // namespace
}  // namespace dstrain::coordinator
