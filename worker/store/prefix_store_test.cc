// PrefixStore specifics (the Store contract over a PrefixStore is in store_conformance_test.cc):
// how keys are rewritten, isolation between prefixes over one base, and nesting.
#include "worker/store/prefix_store.h"

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/store/in_memory_store.h"

namespace dstrain::store {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

constexpr absl::Duration kLong = absl::Seconds(5);

TEST(PrefixStoreTest, KeysLiveUnderThePrefixInTheBase) {
  InMemoryStore base;
  PrefixStore job("job7", &base);
  EXPECT_EQ(job.prefix(), "job7");
  EXPECT_EQ(job.base(), &base);
  ASSERT_THAT(job.Set("rank0", "addr"), IsOk());
  absl::StatusOr<std::string> raw = base.Get("job7/rank0", absl::ZeroDuration());
  ASSERT_THAT(raw, IsOk());
  EXPECT_EQ(*raw, "addr");
  EXPECT_THAT(base.Get("rank0", absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::_));
  ASSERT_THAT(job.Add("count", 3).status(), IsOk());
  EXPECT_THAT(base.Get("job7/count", absl::ZeroDuration()), IsOk());
}

TEST(PrefixStoreTest, TwoPrefixesOverOneBaseAreIsolated) {
  InMemoryStore base;
  PrefixStore a("jobA", &base);
  PrefixStore b("jobB", &base);
  ASSERT_THAT(a.Set("key", "from A"), IsOk());
  ASSERT_THAT(b.Set("key", "from B"), IsOk());
  absl::StatusOr<std::string> va = a.Get("key", kLong);
  absl::StatusOr<std::string> vb = b.Get("key", kLong);
  ASSERT_THAT(va, IsOk());
  ASSERT_THAT(vb, IsOk());
  EXPECT_EQ(*va, "from A");
  EXPECT_EQ(*vb, "from B");

  EXPECT_THAT(a.Add("n", 5).status(), IsOk());
  absl::StatusOr<int64_t> nb = b.Add("n", 1);
  ASSERT_THAT(nb, IsOk());
  EXPECT_EQ(*nb, 1);

  ASSERT_THAT(a.Set("only_a", "x"), IsOk());
  EXPECT_THAT(b.Wait({"only_a"}, absl::Milliseconds(20)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("jobB/only_a")));
  absl::StatusOr<std::string> cas = b.CompareSet("only_a", "", "b's");
  ASSERT_THAT(cas, IsOk());
  EXPECT_EQ(*cas, "b's");
  absl::StatusOr<std::string> still = a.Get("only_a", kLong);
  ASSERT_THAT(still, IsOk());
  EXPECT_EQ(*still, "x");

  absl::StatusOr<bool> deleted = b.DeleteKey("key");
  ASSERT_THAT(deleted, IsOk());
  EXPECT_TRUE(*deleted);
  EXPECT_THAT(a.Get("key", kLong), IsOk());
}

TEST(PrefixStoreTest, NestedPrefixesCompose) {
  InMemoryStore base;
  PrefixStore job("job7", &base);
  PrefixStore attempt("attempt2", &job);
  PrefixStore group("dp0", &attempt);
  ASSERT_THAT(group.Set("rank1", "v"), IsOk());
  EXPECT_THAT(base.Get("job7/attempt2/dp0/rank1", absl::ZeroDuration()), IsOk());
  EXPECT_THAT(attempt.Get("dp0/rank1", absl::ZeroDuration()), IsOk());
  EXPECT_THAT(
      group.Wait({"rank1", "rank2"}, absl::ZeroDuration()),
      StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("\"job7/attempt2/dp0/rank2\"")));
  EXPECT_EQ(base.NumKeys(), 1);
}

TEST(PrefixStoreTest, ErrorsOfTheBasePassThrough) {
  InMemoryStore base;
  PrefixStore job("job7", &base);
  ASSERT_THAT(job.Set("word", "abc"), IsOk());
  EXPECT_THAT(job.Add("word", 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job7/word")));
  base.Close();
  EXPECT_THAT(job.Set("k", "v"), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
}

}  // namespace
}  // namespace dstrain::store
