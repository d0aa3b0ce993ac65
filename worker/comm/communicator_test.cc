#include "worker/comm/communicator.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/comm/completion_work.h"
#include "worker/comm/testing/stub_communicator.h"

namespace dstrain::comm {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::_;
using ::testing::AllOf;
using ::testing::HasSubstr;

using ::dstrain::comm::testing::StubCommunicator;

TEST(CommunicatorTest, ReduceOpNames) {
  EXPECT_EQ(ReduceOpName(ReduceOp::kSum), "sum");
  EXPECT_EQ(ReduceOpName(ReduceOp::kAvg), "avg");
  EXPECT_EQ(ReduceOpName(ReduceOp::kMax), "max");
}

TEST(CommunicatorTest, OpDescriptionNamesOpGroupAndRank) {
  StubCommunicator c(1, 4);
  EXPECT_EQ(OpDescription(c, "AllReduce"), "AllReduce on group 'dp' (rank 1 of 4)");
}

TEST(CommunicatorTest, CheckReduceBuffer) {
  StubCommunicator c(0, 2);
  float x[4];
  EXPECT_THAT(CheckReduceBuffer(c, "AllReduce", CommBuffer{x, 4, DType::kF32}), IsOk());
  EXPECT_THAT(CheckReduceBuffer(c, "AllReduce", CommBuffer{x, 2, DType::kBF16}), IsOk());
  EXPECT_THAT(CheckReduceBuffer(c, "AllReduce", CommBuffer{nullptr, 0, DType::kF16}), IsOk());
  EXPECT_THAT(CheckReduceBuffer(c, "AllReduce", CommBuffer{x, 4, DType::kI32}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("AllReduce"), HasSubstr("'dp'"), HasSubstr("i32"))));
  EXPECT_THAT(CheckReduceBuffer(c, "AllReduce", CommBuffer{nullptr, 3, DType::kF32}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null data")));
  EXPECT_THAT(CheckReduceBuffer(c, "AllReduce", CommBuffer{x, -1, DType::kF32}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
}

TEST(CommunicatorTest, CheckPeerChunkedOptionsDevice) {
  StubCommunicator c(1, 3);
  EXPECT_THAT(CheckPeer(c, "Broadcast", 1, "root", /*allow_self=*/true), IsOk());
  EXPECT_THAT(CheckPeer(c, "Send", 1, "dst", /*allow_self=*/false),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dst 1 is this rank")));
  EXPECT_THAT(CheckPeer(c, "Broadcast", 3, "root", true),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("root 3")));
  EXPECT_THAT(CheckPeer(c, "Recv", -1, "src", false),
              StatusIs(absl::StatusCode::kInvalidArgument, _));

  float x[6];
  EXPECT_THAT(CheckChunked(c, "AllGather", CommBuffer{x, 6}, CommBuffer{x, 2}), IsOk());
  EXPECT_THAT(CheckChunked(c, "AllGather", CommBuffer{x, 5}, CommBuffer{x, 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("3 x 2 = 6")));
  EXPECT_THAT(
      CheckChunked(c, "AllGather", CommBuffer{x, 6, DType::kF32}, CommBuffer{x, 2, DType::kF16}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dtypes differ")));

  CommOptions options;
  EXPECT_THAT(CheckOptions(c, "Barrier", options), IsOk());
  options.timeout = absl::ZeroDuration();
  EXPECT_THAT(CheckOptions(c, "Barrier", options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("timeout")));

  CommBuffer gpu{x, 1};
  gpu.device.type = DeviceType::kCuda;
  EXPECT_THAT(CheckDevice(c, "AllReduce", gpu, DeviceType::kCpu),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("CPU")));
}

TEST(CommunicatorTest, CheckSplitRanks) {
  StubCommunicator c(0, 4);
  EXPECT_THAT(CheckSplitRanks(c, {0, 2}, "even"), IsOk());
  EXPECT_THAT(CheckSplitRanks(c, {}, "x"), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(CheckSplitRanks(c, {2, 1}, "x"), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(CheckSplitRanks(c, {1, 1}, "x"), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(CheckSplitRanks(c, {0, 4}, "x"), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(CheckSplitRanks(c, {0}, ""), StatusIs(absl::StatusCode::kInvalidArgument, _));
}

TEST(CompletionWorkTest, WaitTimesOutThenCompletes) {
  auto state = std::make_shared<WorkState>();
  CompletionWork work(state);
  EXPECT_FALSE(work.IsCompleted());
  EXPECT_THAT(work.Wait(absl::Milliseconds(10)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("still running")));
  std::thread t([state] {
    absl::SleepFor(absl::Milliseconds(20));
    state->Complete(absl::AbortedError("boom"));
  });
  EXPECT_THAT(work.Wait(), StatusIs(absl::StatusCode::kAborted, HasSubstr("boom")));
  EXPECT_TRUE(work.IsCompleted());
  EXPECT_FALSE(state->Complete(absl::OkStatus()));  // first result stays
  EXPECT_THAT(work.Wait(), StatusIs(absl::StatusCode::kAborted, _));
  t.join();
  EXPECT_THAT(CompletedWork(absl::OkStatus())->Wait(absl::ZeroDuration()), IsOk());
}

}  // namespace
}  // namespace dstrain::comm
