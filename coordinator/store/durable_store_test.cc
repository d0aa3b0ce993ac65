// DurableStore writes every change through, in order, and comes back whole from what it wrote.
// (Its Store semantics are checked with every other backend in
// worker/store/store_conformance_test.cc.)
#include "coordinator/store/durable_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/status/status_matchers.h"

namespace dstrain::coordinator {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

// A KvLog in memory that can be told to fail.
class MapLog final : public KvLog {
 public:
  absl::Status Put(absl::string_view key, absl::string_view value) override {
    absl::MutexLock lock(&mu_);
    if (fail_) return absl::UnavailableError("disk gone");
    data_[std::string(key)] = std::string(value);
    return absl::OkStatus();
  }
  absl::Status Delete(absl::string_view key) override {
    absl::MutexLock lock(&mu_);
    if (fail_) return absl::UnavailableError("disk gone");
    data_.erase(std::string(key));
    return absl::OkStatus();
  }
  std::vector<std::pair<std::string, std::string>> Pairs() {
    absl::MutexLock lock(&mu_);
    return {data_.begin(), data_.end()};
  }
  void set_fail(bool fail) {
    absl::MutexLock lock(&mu_);
    fail_ = fail;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::string> data_;
  bool fail_ = false;
};

TEST(DurableStoreTest, EveryChangeReachesTheLogAndARestartRestoresIt) {
  MapLog log;
  {
    DurableStore store(&log, {});
    ASSERT_THAT(store.Set("addr/0", std::string("10.0.0.1\0:7", 11)), IsOk());
    ASSERT_THAT(store.Add("count", 2).status(), IsOk());
    ASSERT_THAT(store.Add("count", 3).status(), IsOk());
    ASSERT_THAT(store.CompareSet("leader", "", "rank0").status(), IsOk());
    ASSERT_THAT(store.CompareSet("leader", "nobody", "rank1").status(), IsOk());  // no swap
    ASSERT_THAT(store.CompareSet("absent", "x", "y").status(), IsOk());           // stays absent
    ASSERT_THAT(store.Set("gone", "1"), IsOk());
    ASSERT_THAT(store.DeleteKey("gone").status(), IsOk());
  }
  const auto pairs = log.Pairs();
  EXPECT_EQ(pairs,
            (std::vector<std::pair<std::string, std::string>>{
                {"addr/0", std::string("10.0.0.1\0:7", 11)}, {"count", "5"}, {"leader", "rank0"}}));
  DurableStore restarted(&log, pairs);
  EXPECT_EQ(*restarted.Get("count", absl::ZeroDuration()), "5");
  EXPECT_EQ(*restarted.Get("leader", absl::ZeroDuration()), "rank0");
  EXPECT_EQ(*restarted.Get("addr/0", absl::ZeroDuration()), std::string("10.0.0.1\0:7", 11));
  EXPECT_EQ(restarted.NumKeys(), 3);
}

TEST(DurableStoreTest, ConcurrentAddsLeaveTheLastSumInTheLog) {
  MapLog log;
  DurableStore store(&log, {});
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&store] {
      for (int i = 0; i < 100; ++i) EXPECT_THAT(store.Add("n", 1).status(), IsOk());
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(log.Pairs(), (std::vector<std::pair<std::string, std::string>>{{"n", "800"}}));
}

TEST(DurableStoreTest, ALogFailureReachesTheCaller) {
  MapLog log;
  DurableStore store(&log, {});
  log.set_fail(true);
  EXPECT_THAT(store.Set("k", "v"), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("disk")));
  EXPECT_THAT(store.Add("n", 1).status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("disk")));
  log.set_fail(false);
  ASSERT_THAT(store.Set("k", "w"), IsOk());
  EXPECT_EQ(log.Pairs(), (std::vector<std::pair<std::string, std::string>>{{"k", "w"}}));
}

}  // namespace
}  // namespace dstrain::coordinator
