#include "worker/comm/gloo/gloo_store_adapter.h"

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/status/status_matchers.h"
#include "gloo/common/error.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/store/in_memory_store.h"

namespace dstrain::comm {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

TEST(GlooStoreAdapterTest, SetGetWaitPassThrough) {
  store::InMemoryStore store;
  GlooStoreAdapter adapter(&store, absl::Seconds(5));
  adapter.set("k", std::vector<char>{'a', '\0', 'b'});
  EXPECT_EQ(*store.Get("k", absl::ZeroDuration()), std::string("a\0b", 3));
  EXPECT_EQ(adapter.get("k"), (std::vector<char>{'a', '\0', 'b'}));
  std::thread later([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_THAT(store.Set("w", "1"), IsOk());
  });
  adapter.wait({"k", "w"}, std::chrono::milliseconds(5000));
  later.join();
  EXPECT_THAT(adapter.error(), IsOk());
}

TEST(GlooStoreAdapterTest, TimeoutsBecomeIoExceptionsAndKeepTheStatus) {
  store::InMemoryStore store;
  GlooStoreAdapter adapter(&store, absl::Milliseconds(30));
  EXPECT_THROW(adapter.get("missing"), gloo::IoException);
  EXPECT_THAT(adapter.error(), StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("missing")));
  // Gloo's longer timeout is capped by the adapter's.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(adapter.wait({"other"}, std::chrono::milliseconds(60000)), gloo::IoException);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // The first error is kept.
  EXPECT_THAT(adapter.error(), StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("missing")));
}

TEST(GlooStoreAdapterTest, ClosedStoreIsUnavailable) {
  store::InMemoryStore store;
  store.Close();
  GlooStoreAdapter adapter(&store, absl::Seconds(1));
  EXPECT_THROW(adapter.set("k", {'x'}), gloo::IoException);
  EXPECT_THAT(adapter.error(), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
}

}  // namespace
}  // namespace dstrain::comm
