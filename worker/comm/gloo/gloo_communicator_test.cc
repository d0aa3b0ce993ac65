#include "worker/comm/gloo/gloo_communicator.h"

#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/comm/testing/conformance.h"
#include "worker/store/in_memory_store.h"

namespace dstrain::comm {
namespace {

using ::dstrain::comm::testing::CommBackend;
using ::dstrain::comm::testing::CommConformanceTest;
using ::dstrain::comm::testing::ConformanceParamName;
using ::dstrain::comm::testing::ConformanceParams;
using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::_;
using ::testing::AllOf;
using ::testing::HasSubstr;

GlooOptions TestOptions() {
  GlooOptions o;
  o.timeout = absl::Seconds(30);
  return o;
}

std::shared_ptr<const CommBackend> GlooBackend() {
  auto backend = std::make_shared<CommBackend>();
  backend->name = "gloo";
  backend->new_group = [](int size) {
    auto store = std::make_shared<store::InMemoryStore>();
    return [store, size](int rank) -> absl::StatusOr<std::unique_ptr<Communicator>> {
      absl::StatusOr<std::unique_ptr<GlooCommunicator>> c =
          GlooCommunicator::Create(store.get(), rank, size, "world", TestOptions());
      if (!c.ok()) return c.status();
      return std::unique_ptr<Communicator>(*std::move(c));
    };
  };
  return backend;
}

INSTANTIATE_TEST_SUITE_P(Gloo, CommConformanceTest,
                         ::testing::ValuesIn(ConformanceParams(GlooBackend())),
                         ConformanceParamName);

// Creates a group of `size` ranks on threads; returns them in rank order.
std::vector<std::unique_ptr<GlooCommunicator>> MakeGroup(store::Store* store, int size,
                                                         GlooOptions options = TestOptions()) {
  std::vector<std::unique_ptr<GlooCommunicator>> comms(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      auto c = GlooCommunicator::Create(store, r, size, "g", options);
      ASSERT_THAT(c, IsOk());
      comms[r] = *std::move(c);
    });
  }
  for (auto& t : threads) t.join();
  return comms;
}

TEST(GlooCommunicatorTest, CreateValidatesArguments) {
  store::InMemoryStore store;
  EXPECT_THAT(GlooCommunicator::Create(nullptr, 0, 1, "g", TestOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(GlooCommunicator::Create(&store, 1, 1, "g", TestOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(GlooCommunicator::Create(&store, 0, 1, "", TestOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
  GlooOptions bad = TestOptions();
  bad.hostname = "no-such-host.invalid";
  EXPECT_THAT(GlooCommunicator::Create(&store, 0, 1, "g", bad),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("no-such-host.invalid")));
}

TEST(GlooCommunicatorTest, CreateTimesOutNamingTheRanksThatNeverJoined) {
  store::InMemoryStore store;
  GlooOptions options = TestOptions();
  options.timeout = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  // Rank 0 of 3 alone: ranks 1 and 2 never publish their addresses.
  EXPECT_THAT(GlooCommunicator::Create(&store, 0, 3, "lonely", options),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       AllOf(HasSubstr("'lonely'"), HasSubstr("[1, 2] never joined"))));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST(GlooCommunicatorTest, DestroyingWithPendingWorkAbortsIt) {
  store::InMemoryStore store;
  auto comms = MakeGroup(&store, 2);
  float x = 1;
  auto w = comms[0]->AllReduce(CommBuffer{&x, 1}, ReduceOp::kSum, CommOptions());
  ASSERT_THAT(w, IsOk());
  float y = 0;
  auto r = comms[0]->Recv(CommBuffer{&y, 1}, 1, 3, CommOptions());
  ASSERT_THAT(r, IsOk());
  const absl::Time start = absl::Now();
  comms[0].reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_THAT((*w)->Wait(), StatusIs(absl::StatusCode::kAborted, HasSubstr("destroyed")));
  EXPECT_THAT((*r)->Wait(), StatusIs(absl::StatusCode::kAborted, _));
  // The peer finds the connection gone.
  EXPECT_FALSE(
      (*comms[1]->AllReduce(CommBuffer{&x, 1}, ReduceOp::kSum, CommOptions()))->Wait().ok());
}

TEST(GlooCommunicatorTest, RecvTimeoutNamesThePeer) {
  store::InMemoryStore store;
  auto comms = MakeGroup(&store, 2);
  float y = 0;
  CommOptions o;
  o.timeout = absl::Milliseconds(200);
  auto r = comms[1]->Recv(CommBuffer{&y, 1}, 0, 42, o);
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT((*r)->Wait(), StatusIs(absl::StatusCode::kDeadlineExceeded,
                                     AllOf(HasSubstr("Recv"), HasSubstr("'g'"), HasSubstr("rank 0"),
                                           HasSubstr("tag 42"))));
  EXPECT_FALSE(comms[1]->AsyncError().ok());
  EXPECT_THAT(comms[1]->Barrier(CommOptions()), StatusIs(absl::StatusCode::kAborted, _));
}

TEST(GlooCommunicatorTest, WaitWithShortTimeoutDoesNotDisturbTheOperation) {
  store::InMemoryStore store;
  auto comms = MakeGroup(&store, 2);
  float a = 1, b = 2;
  auto w0 = *comms[0]->AllReduce(CommBuffer{&a, 1}, ReduceOp::kSum, CommOptions());
  EXPECT_THAT(w0->Wait(absl::Milliseconds(50)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("still running")));
  float r = 0, s = 5;
  auto recv = *comms[0]->Recv(CommBuffer{&r, 1}, 1, 0, CommOptions());
  EXPECT_THAT(recv->Wait(absl::Milliseconds(50)), StatusIs(absl::StatusCode::kDeadlineExceeded, _));
  auto w1 = *comms[1]->AllReduce(CommBuffer{&b, 1}, ReduceOp::kSum, CommOptions());
  auto send = *comms[1]->Send(CommBuffer{&s, 1}, 0, 0, CommOptions());
  EXPECT_THAT(w0->Wait(), IsOk());
  EXPECT_THAT(w1->Wait(), IsOk());
  EXPECT_THAT(recv->Wait(), IsOk());
  EXPECT_THAT(send->Wait(), IsOk());
  EXPECT_EQ(a, 3);
  EXPECT_EQ(r, 5);
}

// A rank that finishes its last operation and leaves at once (its connections close) must not
// fail a peer still finishing the same operation: the data arrived before the connection closed.
TEST(GlooCommunicatorTest, PeerLeavingRightAfterItsLastOperationDoesNotFailOthers) {
  for (int round = 0; round < 3; ++round) {
    store::InMemoryStore store;
    auto comms = MakeGroup(&store, 2);
    constexpr int64_t kCount = 8 << 20;  // 32 MiB: more than the socket buffers hold
    std::vector<float> a(kCount, 1.0f), b(kCount, 2.0f), sent(kCount, 3.0f), got(kCount, 0.0f);
    std::thread leaver([&] {
      ASSERT_THAT(
          (*comms[0]->AllReduce(CommBuffer{a.data(), kCount}, ReduceOp::kSum, CommOptions()))
              ->Wait(),
          IsOk());
      ASSERT_THAT((*comms[0]->Send(CommBuffer{sent.data(), kCount}, 1, 0, CommOptions()))->Wait(),
                  IsOk());
      comms[0].reset();
    });
    auto w = comms[1]->AllReduce(CommBuffer{b.data(), kCount}, ReduceOp::kSum, CommOptions());
    auto r = comms[1]->Recv(CommBuffer{got.data(), kCount}, 0, 0, CommOptions());
    ASSERT_THAT(w, IsOk());
    ASSERT_THAT(r, IsOk());
    leaver.join();
    EXPECT_THAT((*w)->Wait(), IsOk()) << round;
    EXPECT_THAT((*r)->Wait(), IsOk()) << round;
    EXPECT_EQ(b[kCount - 1], 3.0f);
    EXPECT_EQ(got[kCount - 1], 3.0f);
  }
}

}  // namespace
}  // namespace dstrain::comm
