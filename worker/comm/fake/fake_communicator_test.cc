#include "worker/comm/fake/fake_communicator.h"

#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/comm/testing/conformance.h"

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

std::shared_ptr<const CommBackend> FakeBackend() {
  auto backend = std::make_shared<CommBackend>();
  backend->name = "fake";
  backend->new_group = [](int size) {
    std::shared_ptr<FakeWorld> world = FakeWorld::Create(size);
    return [world](int rank) -> absl::StatusOr<std::unique_ptr<Communicator>> {
      absl::StatusOr<std::unique_ptr<FakeCommunicator>> c = FakeCommunicator::Create(world, rank);
      if (!c.ok()) return c.status();
      return std::unique_ptr<Communicator>(*std::move(c));
    };
  };
  return backend;
}

INSTANTIATE_TEST_SUITE_P(Fake, CommConformanceTest,
                         ::testing::ValuesIn(ConformanceParams(FakeBackend())),
                         ConformanceParamName);

CommOptions Timeout(absl::Duration d) {
  CommOptions o;
  o.timeout = d;
  return o;
}

std::vector<std::unique_ptr<FakeCommunicator>> MakeGroup(const std::shared_ptr<FakeWorld>& world) {
  std::vector<std::unique_ptr<FakeCommunicator>> comms;
  for (int r = 0; r < world->size(); ++r) {
    comms.push_back(*FakeCommunicator::Create(world, r));
  }
  return comms;
}

absl::Status RunAndWait(absl::StatusOr<std::unique_ptr<Work>> w) {
  if (!w.ok()) return w.status();
  return (*w)->Wait();
}

TEST(FakeCommunicatorTest, OneThreadCanDriveEveryRank) {
  auto world = FakeWorld::Create(3);
  auto comms = MakeGroup(world);
  std::vector<float> x = {1, 2, 3};
  std::vector<std::unique_ptr<Work>> works;
  for (int r = 0; r < 3; ++r) {
    auto w = comms[r]->AllReduce(CommBuffer{&x[r], 1, DType::kF32}, ReduceOp::kSum, CommOptions());
    ASSERT_THAT(w, IsOk());
    EXPECT_EQ((*w)->IsCompleted(), r == 2);  // data moves when the last rank arrives
    works.push_back(*std::move(w));
  }
  for (auto& w : works) EXPECT_THAT(w->Wait(), IsOk());
  EXPECT_EQ(x, (std::vector<float>{6, 6, 6}));
  EXPECT_EQ(world->OpsIssued(0), 1);
}

TEST(FakeCommunicatorTest, ReductionOrderIsRankOrderAndBitwiseEqualAcrossRanks) {
  constexpr int kRanks = 4;
  constexpr int kCount = 4096;
  auto world = FakeWorld::Create(kRanks);
  auto comms = MakeGroup(world);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1e3f, 1e3f);
  std::vector<std::vector<float>> data(kRanks, std::vector<float>(kCount));
  for (auto& d : data) {
    for (float& v : d) v = dist(rng);
  }
  std::vector<float> want(kCount);
  for (int i = 0; i < kCount; ++i) {
    float acc = data[0][i];
    for (int r = 1; r < kRanks; ++r) acc += data[r][i];
    want[i] = acc;
  }
  std::vector<std::unique_ptr<Work>> works;
  for (int r = 0; r < kRanks; ++r) {
    works.push_back(
        *comms[r]->AllReduce(CommBuffer{data[r].data(), kCount}, ReduceOp::kSum, CommOptions()));
  }
  for (auto& w : works) ASSERT_THAT(w->Wait(), IsOk());
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(std::memcmp(data[r].data(), want.data(), kCount * sizeof(float)), 0) << r;
  }
}

TEST(FakeCommunicatorTest, InjectedErrorFailsThatRankAndTimesOutThePeers) {
  auto world = FakeWorld::Create(3);
  auto comms = MakeGroup(world);
  world->FailOp(1, /*op_index=*/1, absl::InternalError("disk on fire"));
  const absl::Duration timeout = absl::Milliseconds(200);
  std::vector<float> x(3, 1.0f);
  // Op 0 succeeds everywhere.
  std::vector<std::unique_ptr<Work>> works;
  for (int r = 0; r < 3; ++r) {
    works.push_back(*comms[r]->AllReduce(CommBuffer{&x[r], 1}, ReduceOp::kSum, CommOptions()));
  }
  for (auto& w : works) ASSERT_THAT(w->Wait(), IsOk());

  std::vector<absl::Status> status(3);
  std::vector<absl::Duration> elapsed(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      const absl::Time start = absl::Now();
      status[r] =
          RunAndWait(comms[r]->AllReduce(CommBuffer{&x[r], 1}, ReduceOp::kSum, Timeout(timeout)));
      elapsed[r] = absl::Now() - start;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_THAT(status[1], StatusIs(absl::StatusCode::kInternal,
                                  AllOf(HasSubstr("injected fault"), HasSubstr("disk on fire"))));
  for (int r : {0, 2}) {
    EXPECT_THAT(status[r],
                StatusIs(absl::StatusCode::kDeadlineExceeded,
                         AllOf(HasSubstr("AllReduce"), HasSubstr("'world'"), HasSubstr("[1]"))))
        << r;
    EXPECT_GE(elapsed[r], timeout * 0.9);
    EXPECT_LT(elapsed[r], timeout + absl::Seconds(1));
  }
  for (int r = 0; r < 3; ++r) {
    EXPECT_FALSE(comms[r]->AsyncError().ok()) << r;
    EXPECT_THAT(comms[r]->Barrier(CommOptions()), StatusIs(absl::StatusCode::kAborted, _));
  }
}

TEST(FakeCommunicatorTest, ShortStallOnlyDelays) {
  auto world = FakeWorld::Create(2);
  auto comms = MakeGroup(world);
  world->StallOp(0, 0, absl::Milliseconds(100));
  float a = 1, b = 2;
  const absl::Time start = absl::Now();
  auto w0 = *comms[0]->AllReduce(CommBuffer{&a, 1}, ReduceOp::kSum, Timeout(absl::Seconds(5)));
  auto w1 = *comms[1]->AllReduce(CommBuffer{&b, 1}, ReduceOp::kSum, Timeout(absl::Seconds(5)));
  EXPECT_FALSE(w1->IsCompleted());
  EXPECT_THAT(w1->Wait(), IsOk());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(95));
  EXPECT_THAT(w0->Wait(), IsOk());
  EXPECT_EQ(a, 3);
  EXPECT_EQ(b, 3);
}

TEST(FakeCommunicatorTest, LongStallTimesOutThePeersNamingTheStalledRank) {
  auto world = FakeWorld::Create(3);
  auto comms = MakeGroup(world);
  world->StallOp(2, 0, absl::Seconds(10));
  std::vector<float> x(3, 1.0f);
  std::vector<std::unique_ptr<Work>> works;
  for (int r = 0; r < 3; ++r) {
    works.push_back(
        *comms[r]->Broadcast(CommBuffer{&x[r], 1}, 0, Timeout(absl::Milliseconds(100))));
  }
  const absl::Time start = absl::Now();
  for (int r = 0; r < 3; ++r) {
    EXPECT_THAT(works[r]->Wait(), StatusIs(absl::StatusCode::kDeadlineExceeded,
                                           AllOf(HasSubstr("Broadcast"), HasSubstr("op #0"))))
        << r;
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_THAT(works[0]->Wait(), StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("[2]")));
}

TEST(FakeCommunicatorTest, HungRankNeverArrives) {
  auto world = FakeWorld::Create(3);
  auto comms = MakeGroup(world);
  world->HangOp(2, 0);
  std::vector<float> x(3, 1.0f);
  std::vector<std::unique_ptr<Work>> works;
  for (int r = 0; r < 3; ++r) {
    works.push_back(*comms[r]->AllReduce(CommBuffer{&x[r], 1}, ReduceOp::kSum,
                                         Timeout(absl::Milliseconds(50))));
  }
  EXPECT_THAT(works[0]->Wait(),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       AllOf(HasSubstr("AllReduce on group 'world' (rank 0 of 3, op #0)"),
                             HasSubstr("waiting for rank(s) [2]"))));
  EXPECT_THAT(works[1]->Wait(), StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("[2]")));
  EXPECT_THAT(works[2]->Wait(), StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("hangs")));
  EXPECT_EQ(x, (std::vector<float>{1, 1, 1}));  // no data moved
}

TEST(FakeCommunicatorTest, WaitTimeoutShorterThanTheOperationLeavesItRunning) {
  auto world = FakeWorld::Create(2);
  auto comms = MakeGroup(world);
  float a = 1, b = 2;
  auto w0 = *comms[0]->AllReduce(CommBuffer{&a, 1}, ReduceOp::kMax, Timeout(absl::Seconds(10)));
  EXPECT_THAT(w0->Wait(absl::Milliseconds(20)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("still running")));
  EXPECT_THAT(comms[0]->AsyncError(), IsOk());
  auto w1 = *comms[1]->AllReduce(CommBuffer{&b, 1}, ReduceOp::kMax, Timeout(absl::Seconds(10)));
  EXPECT_THAT(w0->Wait(), IsOk());
  EXPECT_THAT(w1->Wait(), IsOk());
  EXPECT_EQ(a, 2);
}

TEST(FakeCommunicatorTest, MismatchedCollectivesFailEverywhere) {
  auto world = FakeWorld::Create(2);
  auto comms = MakeGroup(world);
  float a[5] = {}, b[5] = {};
  auto w0 = *comms[0]->AllReduce(CommBuffer{a, 4}, ReduceOp::kSum, CommOptions());
  auto w1 = *comms[1]->AllReduce(CommBuffer{b, 5}, ReduceOp::kSum, CommOptions());
  const auto mismatch =
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("collective mismatch"), HasSubstr("f32 x 4"), HasSubstr("f32 x 5")));
  EXPECT_THAT(w0->Wait(), mismatch);
  EXPECT_THAT(w1->Wait(), mismatch);

  auto world2 = FakeWorld::Create(2);
  auto comms2 = MakeGroup(world2);
  auto s = *comms2[0]->Send(CommBuffer{a, 4}, 1, 3, CommOptions());
  auto r = *comms2[1]->Recv(CommBuffer{b, 2}, 0, 3, CommOptions());
  EXPECT_THAT(s->Wait(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("size mismatch")));
  EXPECT_THAT(r->Wait(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("size mismatch")));
}

TEST(FakeCommunicatorTest, RecvWithoutSenderTimesOutNamingThePeer) {
  auto world = FakeWorld::Create(2);
  auto comms = MakeGroup(world);
  float b = 0;
  auto w = *comms[1]->Recv(CommBuffer{&b, 1}, 0, 9, Timeout(absl::Milliseconds(30)));
  EXPECT_THAT(w->Wait(), StatusIs(absl::StatusCode::kDeadlineExceeded,
                                  AllOf(HasSubstr("Recv"), HasSubstr("tag 9"), HasSubstr("[0]"))));
  // A Send arriving afterwards finds its partner gone.
  float a = 1;
  EXPECT_THAT(RunAndWait(comms[0]->Send(CommBuffer{&a, 1}, 1, 9, Timeout(absl::Seconds(5)))),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("abandoned")));
}

TEST(FakeCommunicatorTest, DestroyingACommunicatorFailsItsPendingWork) {
  auto world = FakeWorld::Create(2);
  auto comms = MakeGroup(world);
  float a = 1;
  auto w = *comms[0]->AllReduce(CommBuffer{&a, 1}, ReduceOp::kSum, CommOptions());
  comms[0].reset();
  EXPECT_THAT(w->Wait(), StatusIs(absl::StatusCode::kAborted, HasSubstr("destroyed")));
  float b = 2;
  EXPECT_THAT(RunAndWait(comms[1]->AllReduce(CommBuffer{&b, 1}, ReduceOp::kSum, CommOptions())),
              StatusIs(absl::StatusCode::kAborted, _));
  EXPECT_EQ(b, 2);
}

TEST(FakeCommunicatorTest, SplitArgumentsMustAgree) {
  auto world = FakeWorld::Create(3);
  auto comms = MakeGroup(world);
  auto a = comms[0]->Split({0, 1}, "pair", CommOptions());
  ASSERT_THAT(a, IsOk());
  EXPECT_THAT(comms[1]->Split({1, 2}, "pair", CommOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("split #0")));
  auto c = comms[2]->Split({0, 1}, "pair", CommOptions());
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(*c, nullptr);
  auto sub = static_cast<FakeCommunicator*>(a->get());
  EXPECT_EQ(sub->world()->name(), "pair");
  EXPECT_EQ(sub->world()->size(), 2);
}

TEST(FakeCommunicatorTest, OneCommunicatorPerRank) {
  auto world = FakeWorld::Create(2);
  auto c0 = FakeCommunicator::Create(world, 0);
  ASSERT_THAT(c0, IsOk());
  EXPECT_THAT(FakeCommunicator::Create(world, 0), StatusIs(absl::StatusCode::kAlreadyExists, _));
  EXPECT_THAT(FakeCommunicator::Create(world, 2), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_EQ((*c0)->backend(), "fake");
}

}  // namespace
}  // namespace dstrain::comm
