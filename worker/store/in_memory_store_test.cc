// InMemoryStore beyond the shared Store contract (store_conformance_test.cc covers that): Close,
// the cancellable Get/Wait a server uses, infinite and zero timeouts, and the wording of errors.
#include "worker/store/in_memory_store.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::store {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

TEST(InMemoryStoreTest, InfiniteTimeoutWaitsForTheKey) {
  InMemoryStore store;
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    EXPECT_THAT(store.Set("k", "v"), IsOk());
  });
  absl::StatusOr<std::string> value = store.Get("k", absl::InfiniteDuration());
  writer.join();
  ASSERT_THAT(value, IsOk());
  EXPECT_EQ(*value, "v");
}

TEST(InMemoryStoreTest, NegativeTimeoutChecksOnce) {
  InMemoryStore store;
  const absl::Time start = absl::Now();
  EXPECT_THAT(store.Get("k", absl::Seconds(-3)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("\"k\"")));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
}

TEST(InMemoryStoreTest, CloseWakesBlockedCallsAndFailsLaterOnes) {
  InMemoryStore store;
  std::vector<absl::Status> results(2);
  std::thread getter([&] { results[0] = store.Get("k", absl::InfiniteDuration()).status(); });
  std::thread waiter([&] { results[1] = store.Wait({"a", "b"}, absl::InfiniteDuration()); });
  absl::SleepFor(absl::Milliseconds(50));
  const absl::Time closed_at = absl::Now();
  store.Close();
  getter.join();
  waiter.join();
  EXPECT_LT(absl::Now() - closed_at, absl::Seconds(1));
  EXPECT_THAT(results[0], StatusIs(absl::StatusCode::kUnavailable, HasSubstr("closed")));
  EXPECT_THAT(results[1], StatusIs(absl::StatusCode::kUnavailable, HasSubstr("closed")));
  EXPECT_THAT(store.Set("k", "v"), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(store.Add("n", 1), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(store.CompareSet("k", "", "v"),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(store.DeleteKey("k"), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  store.Close();  // Idempotent.
}

TEST(InMemoryStoreTest, GetOrCancelGivesUpWhenCancelled) {
  InMemoryStore store;
  std::atomic<bool> gone{false};
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(50));
    gone = true;
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> value = store.GetOrCancel(
      "k", absl::Seconds(10), [&] { return gone.load(); }, absl::Milliseconds(10));
  canceller.join();
  EXPECT_THAT(value, StatusIs(absl::StatusCode::kCancelled, HasSubstr("Get")));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST(InMemoryStoreTest, WaitOrCancelSucceedsWhenKeysArriveAndTimesOutOtherwise) {
  InMemoryStore store;
  auto never = [] { return false; };
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(30));
    EXPECT_THAT(store.Set("a", "1"), IsOk());
  });
  EXPECT_THAT(store.WaitOrCancel({"a"}, absl::Seconds(5), never, absl::Milliseconds(10)), IsOk());
  writer.join();
  const absl::Time start = absl::Now();
  EXPECT_THAT(
      store.WaitOrCancel({"a", "b"}, absl::Milliseconds(100), never, absl::Milliseconds(10)),
      StatusIs(absl::StatusCode::kDeadlineExceeded,
               ::testing::AllOf(HasSubstr("100ms"), HasSubstr("1 of 2 keys: \"b\""))));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
}

TEST(InMemoryStoreTest, WaitMessageListsAtMostEightMissingKeys) {
  InMemoryStore store;
  std::vector<std::string> keys;
  for (int i = 0; i < 12; ++i) keys.push_back("key" + std::to_string(i));
  absl::Status s = store.Wait(keys, absl::ZeroDuration());
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDeadlineExceeded,
                          ::testing::AllOf(HasSubstr("12 of 12 keys"), HasSubstr("\"key7\""),
                                           ::testing::Not(HasSubstr("\"key8\"")),
                                           HasSubstr("and 4 more"))));
}

TEST(InMemoryStoreTest, BinaryKeysAreEscapedInMessages) {
  InMemoryStore store;
  EXPECT_THAT(store.Get(std::string("a\0b\n", 4), absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("key \"a\\x00")));
}

TEST(InMemoryStoreTest, NumKeysCountsStoredKeys) {
  InMemoryStore store;
  EXPECT_EQ(store.NumKeys(), 0);
  ASSERT_THAT(store.Set("a", ""), IsOk());
  ASSERT_THAT(store.Add("b", 1).status(), IsOk());
  EXPECT_EQ(store.NumKeys(), 2);
  ASSERT_THAT(store.DeleteKey("a").status(), IsOk());
  EXPECT_EQ(store.NumKeys(), 1);
}

// Ranks as threads: each publishes its address and waits for everyone's, as Gloo does.
TEST(InMemoryStoreTest, ThreadsRendezvous) {
  InMemoryStore store;
  constexpr int kWorld = 8;
  std::vector<std::thread> ranks;
  std::atomic<int> failures{0};
  for (int rank = 0; rank < kWorld; ++rank) {
    ranks.emplace_back([&, rank] {
      if (!store.Set("addr/" + std::to_string(rank), "host" + std::to_string(rank)).ok()) {
        ++failures;
      }
      for (int peer = 0; peer < kWorld; ++peer) {
        absl::StatusOr<std::string> addr =
            store.Get("addr/" + std::to_string(peer), absl::Seconds(5));
        if (!addr.ok() || *addr != "host" + std::to_string(peer)) ++failures;
      }
    });
  }
  for (std::thread& t : ranks) t.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace dstrain::store
