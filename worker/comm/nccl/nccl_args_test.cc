// What NcclCommunicator checks before it touches CUDA or NCCL: result-code mapping, type mapping,
// reduction plans, argument checks, and Create's failures that come before the device. Runs on
// machines without a GPU (links libnccl/libcudart, calls no device function).
#include "worker/comm/nccl/nccl_args.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/comm/communicator.h"
#include "worker/comm/nccl/nccl_communicator.h"
#include "worker/comm/nccl/nccl_status.h"
#include "worker/comm/testing/stub_communicator.h"
#include "worker/store/in_memory_store.h"

namespace dstrain::comm::nccl_internal {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

using ::dstrain::comm::testing::StubCommunicator;

constexpr int kDevice = 1;

// `count` elements of `dtype` on cuda:kDevice at a fake (never dereferenced) address.
CommBuffer Cuda(int64_t count, DType dtype = DType::kF32, void* stream = nullptr) {
  static char fake_memory[1];
  CommBuffer b;
  b.data = count > 0 ? fake_memory : nullptr;
  b.count = count;
  b.dtype = dtype;
  b.device = Device{DeviceType::kCuda, kDevice};
  b.stream = stream;
  return b;
}

class NcclArgsTest : public ::testing::Test {
 protected:
  StubCommunicator group_{/*rank=*/1, /*size=*/4, "dp"};
  CommOptions options_;

  static auto Invalid(absl::string_view op, absl::string_view problem) {
    return StatusIs(absl::StatusCode::kInvalidArgument,
                    AllOf(HasSubstr(std::string(op)), HasSubstr("group 'dp'"),
                          HasSubstr("rank 1 of 4"), HasSubstr(std::string(problem))));
  }
};

TEST(NcclStatusTest, MapsEveryResult) {
  EXPECT_EQ(NcclResultCode(ncclSuccess), absl::StatusCode::kOk);
  EXPECT_EQ(NcclResultCode(ncclUnhandledCudaError), absl::StatusCode::kInternal);
  EXPECT_EQ(NcclResultCode(ncclSystemError), absl::StatusCode::kAborted);
  EXPECT_EQ(NcclResultCode(ncclInternalError), absl::StatusCode::kInternal);
  EXPECT_EQ(NcclResultCode(ncclInvalidArgument), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NcclResultCode(ncclInvalidUsage), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(NcclResultCode(ncclRemoteError), absl::StatusCode::kAborted);
  EXPECT_EQ(NcclResultCode(ncclInProgress), absl::StatusCode::kUnavailable);
  EXPECT_EQ(NcclResultCode(static_cast<ncclResult_t>(42)), absl::StatusCode::kInternal);
  EXPECT_EQ(NcclResultName(ncclRemoteError), "ncclRemoteError");
  EXPECT_EQ(NcclResultName(static_cast<ncclResult_t>(42)), "ncclResult(42)");
}

TEST(NcclStatusTest, MessageNamesCallResultAndPlace) {
  EXPECT_THAT(NcclToStatus(ncclSuccess, "ncclAllReduce(...)", "f.cc", 7), IsOk());
  EXPECT_THAT(NcclToStatus(ncclRemoteError, "ncclAllReduce(...)", "f.cc", 7),
              StatusIs(absl::StatusCode::kAborted,
                       AllOf(HasSubstr("f.cc:7"), HasSubstr("ncclAllReduce(...)"),
                             HasSubstr("ncclRemoteError"), HasSubstr("("))));
  EXPECT_THAT(NcclToStatus(static_cast<ncclResult_t>(42), "x", "f.cc", 1),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("ncclResult(42)")));
}

absl::Status ReturnsIfError(ncclResult_t result, bool* reached_end) {
  DT_NCCL_RETURN_IF_ERROR(result);
  *reached_end = true;
  return absl::OkStatus();
}

TEST(NcclStatusTest, ReturnIfErrorMacro) {
  bool reached = false;
  EXPECT_THAT(ReturnsIfError(ncclSuccess, &reached), IsOk());
  EXPECT_TRUE(reached);
  reached = false;
  EXPECT_THAT(ReturnsIfError(ncclInvalidUsage, &reached),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("result")));
  EXPECT_FALSE(reached);
}

TEST(NcclTypesTest, CopyTypes) {
  const struct {
    DType dtype;
    ncclDataType_t type;
    int64_t per_element;
  } cases[] = {{DType::kF32, ncclFloat32, 1},
               {DType::kBF16, ncclBfloat16, 1},
               {DType::kF16, ncclFloat16, 1},
               {DType::kI32, ncclInt32, 1},
               {DType::kU16, ncclUint8, 2}};
  for (const auto& c : cases) {
    SCOPED_TRACE(DTypeName(c.dtype));
    absl::StatusOr<NcclCopyType> got = NcclCopyTypeOf(c.dtype);
    ASSERT_THAT(got, IsOk());
    EXPECT_EQ(got->type, c.type);
    EXPECT_EQ(got->per_element, c.per_element);
    // Same bytes on the wire as in memory.
    const size_t nccl_bytes = c.type == ncclUint8                            ? 1
                              : c.type == ncclFloat32 || c.type == ncclInt32 ? 4
                                                                             : 2;
    EXPECT_EQ(nccl_bytes * got->per_element, DTypeSize(c.dtype));
  }
  EXPECT_THAT(NcclCopyTypeOf(static_cast<DType>(99)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown dtype")));
}

TEST(NcclTypesTest, CastTypes) {
  EXPECT_EQ(*CastType(DType::kF32), DType::kF32);
  EXPECT_EQ(*CastType(DType::kBF16), DType::kBF16);
  EXPECT_EQ(*CastType(DType::kF16), DType::kF16);
  EXPECT_THAT(CastType(DType::kI32),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("i32")));
  EXPECT_THAT(CastType(DType::kU16),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("u16")));
}

TEST(NcclTypesTest, ReductionPlans) {
  // f32 sum: the caller's buffers, no extra pass.
  ReducePlan p = PlanReduction(DType::kF32, ReduceOp::kSum, 4);
  EXPECT_FALSE(p.max_keys || p.divide || p.all_reduce_scratch || p.reduce_scatter_scratch);
  // f32 avg: in place, one division; none needed for one rank.
  p = PlanReduction(DType::kF32, ReduceOp::kAvg, 4);
  EXPECT_TRUE(p.divide);
  EXPECT_FALSE(p.max_keys || p.all_reduce_scratch || p.reduce_scatter_scratch);
  EXPECT_FALSE(PlanReduction(DType::kF32, ReduceOp::kAvg, 1).divide);
  // f32 max: keys in place for AllReduce; ReduceScatter keeps its input intact.
  p = PlanReduction(DType::kF32, ReduceOp::kMax, 4);
  EXPECT_TRUE(p.max_keys);
  EXPECT_FALSE(p.all_reduce_scratch);
  EXPECT_TRUE(p.reduce_scatter_scratch);
  // Half types: always a 4-byte scratch.
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
      p = PlanReduction(dtype, op, 3);
      EXPECT_TRUE(p.all_reduce_scratch && p.reduce_scatter_scratch);
      EXPECT_EQ(p.max_keys, op == ReduceOp::kMax);
      EXPECT_EQ(p.divide, op == ReduceOp::kAvg);
    }
  }
}

TEST_F(NcclArgsTest, AllReduce) {
  EXPECT_THAT(
      CheckAllReduceArgs(group_, kDevice, "AllReduce(sum)", Cuda(1000), ReduceOp::kSum, options_),
      IsOk());
  EXPECT_THAT(
      CheckAllReduceArgs(group_, kDevice, "AllReduce(sum)", Cuda(0), ReduceOp::kSum, options_),
      IsOk());
  EXPECT_THAT(
      CheckAllReduceArgs(group_, kDevice, "AllReduce(sum)", Cuda(-1), ReduceOp::kSum, options_),
      Invalid("AllReduce(sum)", "negative"));
  CommBuffer null_data = Cuda(5);
  null_data.data = nullptr;
  EXPECT_THAT(
      CheckAllReduceArgs(group_, kDevice, "AllReduce(sum)", null_data, ReduceOp::kSum, options_),
      Invalid("AllReduce(sum)", "null"));
  EXPECT_THAT(CheckAllReduceArgs(group_, kDevice, "AllReduce(max)", Cuda(5, DType::kI32),
                                 ReduceOp::kMax, options_),
              Invalid("AllReduce(max)", "i32"));
  CommBuffer on_cpu = Cuda(5);
  on_cpu.device = Device{DeviceType::kCpu, 0};
  EXPECT_THAT(
      CheckAllReduceArgs(group_, kDevice, "AllReduce(sum)", on_cpu, ReduceOp::kSum, options_),
      Invalid("AllReduce(sum)", "CUDA"));
  CommBuffer other_gpu = Cuda(5);
  other_gpu.device.index = 0;
  EXPECT_THAT(
      CheckAllReduceArgs(group_, kDevice, "AllReduce(sum)", other_gpu, ReduceOp::kSum, options_),
      Invalid("AllReduce(sum)", "cuda:0"));
  EXPECT_THAT(CheckAllReduceArgs(group_, kDevice, "AllReduce(?)", Cuda(5), static_cast<ReduceOp>(7),
                                 options_),
              Invalid("AllReduce(?)", "ReduceOp 7"));
  CommOptions no_time;
  no_time.timeout = absl::ZeroDuration();
  EXPECT_THAT(
      CheckAllReduceArgs(group_, kDevice, "AllReduce(sum)", Cuda(5), ReduceOp::kSum, no_time),
      Invalid("AllReduce(sum)", "timeout"));
}

TEST_F(NcclArgsTest, ReduceScatter) {
  EXPECT_THAT(CheckReduceScatterArgs(group_, kDevice, "ReduceScatter(avg)", Cuda(40, DType::kBF16),
                                     Cuda(10, DType::kBF16), ReduceOp::kAvg, options_),
              IsOk());
  EXPECT_THAT(CheckReduceScatterArgs(group_, kDevice, "ReduceScatter(sum)", Cuda(0), Cuda(0),
                                     ReduceOp::kSum, options_),
              IsOk());
  EXPECT_THAT(CheckReduceScatterArgs(group_, kDevice, "ReduceScatter(sum)", Cuda(39), Cuda(10),
                                     ReduceOp::kSum, options_),
              Invalid("ReduceScatter(sum)", "39"));
  EXPECT_THAT(CheckReduceScatterArgs(group_, kDevice, "ReduceScatter(sum)", Cuda(40),
                                     Cuda(10, DType::kF16), ReduceOp::kSum, options_),
              Invalid("ReduceScatter(sum)", "dtypes differ"));
  int s1 = 0, s2 = 0;
  EXPECT_THAT(
      CheckReduceScatterArgs(group_, kDevice, "ReduceScatter(sum)", Cuda(40, DType::kF32, &s1),
                             Cuda(10, DType::kF32, &s2), ReduceOp::kSum, options_),
      Invalid("ReduceScatter(sum)", "different streams"));
  EXPECT_THAT(
      CheckReduceScatterArgs(group_, kDevice, "ReduceScatter(sum)", Cuda(40, DType::kF32, &s1),
                             Cuda(10), ReduceOp::kSum, options_),
      IsOk());
}

TEST_F(NcclArgsTest, AllGather) {
  EXPECT_THAT(CheckAllGatherArgs(group_, kDevice, "AllGather", Cuda(3, DType::kU16),
                                 Cuda(12, DType::kU16), options_),
              IsOk());
  EXPECT_THAT(CheckAllGatherArgs(group_, kDevice, "AllGather", Cuda(3, DType::kI32),
                                 Cuda(12, DType::kI32), options_),
              IsOk());
  EXPECT_THAT(CheckAllGatherArgs(group_, kDevice, "AllGather", Cuda(3), Cuda(13), options_),
              Invalid("AllGather", "13"));
  EXPECT_THAT(
      CheckAllGatherArgs(group_, kDevice, "AllGather", Cuda(3), Cuda(12, DType::kI32), options_),
      Invalid("AllGather", "dtypes differ"));
}

TEST_F(NcclArgsTest, Broadcast) {
  EXPECT_THAT(CheckBroadcastArgs(group_, kDevice, "Broadcast", Cuda(8, DType::kI32), 3, options_),
              IsOk());
  EXPECT_THAT(CheckBroadcastArgs(group_, kDevice, "Broadcast", Cuda(8), 1, options_), IsOk());
  EXPECT_THAT(CheckBroadcastArgs(group_, kDevice, "Broadcast", Cuda(8), 4, options_),
              Invalid("Broadcast", "root 4"));
  EXPECT_THAT(CheckBroadcastArgs(group_, kDevice, "Broadcast", Cuda(8), -1, options_),
              Invalid("Broadcast", "root -1"));
}

TEST_F(NcclArgsTest, PointToPoint) {
  EXPECT_THAT(CheckPointToPointArgs(group_, kDevice, "Send", Cuda(8), 0, "dst", options_), IsOk());
  EXPECT_THAT(
      CheckPointToPointArgs(group_, kDevice, "Recv", Cuda(8, DType::kU16), 3, "src", options_),
      IsOk());
  EXPECT_THAT(CheckPointToPointArgs(group_, kDevice, "Send", Cuda(8), 1, "dst", options_),
              Invalid("Send", "this rank"));
  EXPECT_THAT(CheckPointToPointArgs(group_, kDevice, "Recv", Cuda(8), 4, "src", options_),
              Invalid("Recv", "src 4"));
  CommBuffer on_cpu = Cuda(8);
  on_cpu.device = Device{DeviceType::kCpu, 0};
  EXPECT_THAT(CheckPointToPointArgs(group_, kDevice, "Send", on_cpu, 0, "dst", options_),
              Invalid("Send", "CUDA"));
}

TEST_F(NcclArgsTest, CommonStream) {
  int s1 = 0;
  EXPECT_EQ(*CommonStream(group_, "op", Cuda(1), Cuda(1)), nullptr);
  EXPECT_EQ(*CommonStream(group_, "op", Cuda(1, DType::kF32, &s1), Cuda(1)), &s1);
  EXPECT_EQ(*CommonStream(group_, "op", Cuda(1), Cuda(1, DType::kF32, &s1)), &s1);
  EXPECT_EQ(*CommonStream(group_, "op", Cuda(1, DType::kF32, &s1), Cuda(1, DType::kF32, &s1)), &s1);
}

TEST(NcclCreateTest, RejectsBadArgumentsBeforeTouchingAnything) {
  store::InMemoryStore store;
  const auto invalid = [](absl::string_view problem) {
    return StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(std::string(problem)));
  };
  EXPECT_THAT(NcclCommunicator::Create(nullptr, 0, 1, "world", 0), invalid("null store"));
  EXPECT_THAT(NcclCommunicator::Create(&store, 0, 1, "", 0), invalid("empty name"));
  EXPECT_THAT(NcclCommunicator::Create(&store, 0, 0, "world", 0), invalid("size 0"));
  EXPECT_THAT(NcclCommunicator::Create(&store, 2, 2, "world", 0), invalid("rank 2"));
  EXPECT_THAT(NcclCommunicator::Create(&store, -1, 2, "world", 0), invalid("rank -1"));
  EXPECT_THAT(NcclCommunicator::Create(&store, 0, 1, "world", -1), invalid("device -1"));
  NcclOptions no_time;
  no_time.init_timeout = absl::ZeroDuration();
  EXPECT_THAT(NcclCommunicator::Create(&store, 0, 1, "world", 0, no_time), invalid("init_timeout"));
  EXPECT_EQ(store.NumKeys(), 0);  // rank 0 did not publish anything
}

// A rank other than 0 reads the unique id before it touches CUDA: without rank 0 it times out.
TEST(NcclCreateTest, MissingRankZeroTimesOutWaitingForTheId) {
  store::InMemoryStore store;
  NcclOptions options;
  options.init_timeout = absl::Milliseconds(200);
  const absl::Time start = absl::Now();
  EXPECT_THAT(
      NcclCommunicator::Create(&store, 1, 2, "pp.0", 0, options),
      StatusIs(absl::StatusCode::kDeadlineExceeded,
               AllOf(HasSubstr("group 'pp.0'"), HasSubstr("rank 1 of 2"), HasSubstr("unique id"))));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(NcclCreateTest, RejectsAMalformedId) {
  store::InMemoryStore store;
  ASSERT_THAT(store.Set("nccl/world/unique_id", "short"), IsOk());
  EXPECT_THAT(NcclCommunicator::Create(&store, 1, 2, "world", 0),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("5 bytes")));
}

}  // namespace
}  // namespace dstrain::comm::nccl_internal
