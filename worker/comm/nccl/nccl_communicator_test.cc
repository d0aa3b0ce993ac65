// NcclCommunicator at world size 1 (a GPU machine has one GPU, and NCCL refuses two ranks on one
// device): every operation x dtype x count against the CPU backends' reference
// (//worker/comm:cpu_reduce), zero counts, the internal stream, Split, Barrier, and argument
// checks on a live communicator. Multi-rank logic is covered by the Gloo and Fake backends. Skips
// itself without a CUDA device.
#include "worker/comm/nccl/nccl_communicator.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "worker/comm/communicator.h"
#include "worker/comm/cpu_reduce.h"
#include "worker/store/in_memory_store.h"

namespace dstrain::comm {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;
using Bytes = std::vector<uint8_t>;
using DeviceBytes = kernels::gpu::testing::DeviceBuffer<uint8_t>;

constexpr int kDevice = 0;

enum class Op {
  kAllReduceSum,
  kAllReduceAvg,
  kAllReduceMax,
  kReduceScatterSum,
  kReduceScatterAvg,
  kReduceScatterMax,
  kAllGather,
  kBroadcast,
};

const char* OpName(Op op) {
  switch (op) {
    case Op::kAllReduceSum:
      return "AllReduceSum";
    case Op::kAllReduceAvg:
      return "AllReduceAvg";
    case Op::kAllReduceMax:
      return "AllReduceMax";
    case Op::kReduceScatterSum:
      return "ReduceScatterSum";
    case Op::kReduceScatterAvg:
      return "ReduceScatterAvg";
    case Op::kReduceScatterMax:
      return "ReduceScatterMax";
    case Op::kAllGather:
      return "AllGather";
    case Op::kBroadcast:
      return "Broadcast";
  }
  return "?";
}

ReduceOp ReduceOpOf(Op op) {
  switch (op) {
    case Op::kAllReduceAvg:
    case Op::kReduceScatterAvg:
      return ReduceOp::kAvg;
    case Op::kAllReduceMax:
    case Op::kReduceScatterMax:
      return ReduceOp::kMax;
    default:
      return ReduceOp::kSum;
  }
}

// `n` elements of `dtype`, deterministic: special values first (for reducible types: ±0, ±inf,
// NaN, tiny and huge values), then random ones.
Bytes MakeData(DType dtype, int64_t n, uint32_t seed) {
  Bytes bytes(n * DTypeSize(dtype));
  std::vector<float> f = kernels::gpu::testing::RandomFloats(n, seed, -4.0f, 4.0f);
  const float specials[] = {-0.0f,
                            0.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            1e-7f,
                            6.0e4f,
                            -3.0f};
  for (int64_t i = 0; i < n && i < 8; ++i) f[i] = specials[i];
  switch (dtype) {
    case DType::kF32:
      std::memcpy(bytes.data(), f.data(), bytes.size());
      break;
    case DType::kBF16:
    case DType::kF16:
      FromF32(f.data(), n, dtype, bytes.data());
      break;
    case DType::kI32:
    case DType::kU16: {
      const std::vector<int32_t> ints = kernels::gpu::testing::RandomInts(n, seed, 60000);
      for (int64_t i = 0; i < n; ++i) {
        if (dtype == DType::kI32) {
          std::memcpy(bytes.data() + 4 * i, &ints[i], 4);
        } else {
          const uint16_t u = static_cast<uint16_t>(ints[i]);
          std::memcpy(bytes.data() + 2 * i, &u, 2);
        }
      }
      break;
    }
  }
  return bytes;
}

// Bit-equal, or both NaN (NaN payloads are not part of the contract).
::testing::AssertionResult SameValues(const Bytes& got, const Bytes& want, DType dtype) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << got.size() << " bytes vs " << want.size();
  }
  const size_t esize = DTypeSize(dtype);
  const bool floating = dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got.size() / esize; ++i) {
    if (std::memcmp(got.data() + i * esize, want.data() + i * esize, esize) == 0) continue;
    if (floating) {
      float g, w;
      ToF32(got.data() + i * esize, dtype, 1, &g);
      ToF32(want.data() + i * esize, dtype, 1, &w);
      if (std::isnan(g) && std::isnan(w)) continue;
    }
    if (first < 0) first = i;
    ++bad;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  float g = 0, w = 0;
  if (floating) {
    ToF32(got.data() + first * esize, dtype, 1, &g);
    ToF32(want.data() + first * esize, dtype, 1, &w);
  }
  return ::testing::AssertionFailure()
         << bad << " elements differ; first at " << first << ": got " << g << ", want " << w;
}

CommBuffer Buffer(void* data, int64_t count, DType dtype, cudaStream_t stream) {
  CommBuffer b;
  b.data = count > 0 ? data : nullptr;
  b.count = count;
  b.dtype = dtype;
  b.device = Device{DeviceType::kCuda, kDevice};
  b.stream = stream;
  return b;
}

// One world-size-1 communicator for the whole suite (NCCL init takes a while).
class NcclWorldTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!kernels::gpu::HasCudaDevice()) return;
    store_ = new store::InMemoryStore();
    NcclOptions options;
    options.init_timeout = absl::Minutes(2);
    absl::StatusOr<std::unique_ptr<NcclCommunicator>> comm =
        NcclCommunicator::Create(store_, 0, 1, "world", kDevice, options);
    create_status_ = new absl::Status(comm.status());
    if (comm.ok()) comm_ = comm->release();
  }
  static void TearDownTestSuite() {
    delete comm_;
    comm_ = nullptr;
    delete store_;
    store_ = nullptr;
    delete create_status_;
    create_status_ = nullptr;
  }

  void SetUp() override {
    DT_SKIP_WITHOUT_CUDA_DEVICE();
    ASSERT_NE(comm_, nullptr) << *create_status_;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  CommOptions Options() const {
    CommOptions options;
    options.timeout = absl::Minutes(1);
    return options;
  }

  static store::InMemoryStore* store_;
  static NcclCommunicator* comm_;
  static absl::Status* create_status_;
  cudaStream_t stream_ = nullptr;
};

store::InMemoryStore* NcclWorldTest::store_ = nullptr;
NcclCommunicator* NcclWorldTest::comm_ = nullptr;
absl::Status* NcclWorldTest::create_status_ = nullptr;

TEST_F(NcclWorldTest, Identity) {
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->size(), 1);
  EXPECT_EQ(comm_->name(), "world");
  EXPECT_EQ(comm_->backend(), "nccl");
  EXPECT_EQ(comm_->device(), kDevice);
  EXPECT_THAT(comm_->AsyncError(), IsOk());
  EXPECT_EQ(store_->NumKeys(), 1);  // rank 0 published the unique id
}

class NcclOpTest : public NcclWorldTest,
                   public ::testing::WithParamInterface<std::tuple<Op, DType, int64_t>> {};

TEST_P(NcclOpTest, MatchesCpuReference) {
  const auto [op, dtype, count] = GetParam();
  const Bytes input = MakeData(dtype, count, /*seed=*/static_cast<uint32_t>(count) + 17);
  DeviceBytes d_input(input);
  DeviceBytes d_output(input.size());  // size() == 1: every output has count elements
  Bytes want = input;                  // world size 1: every result is the reference of one rank
  const ReduceOp reduce_op = ReduceOpOf(op);
  const bool reduces = op != Op::kAllGather && op != Op::kBroadcast;
  if (reduces && count > 0) {
    const void* inputs[] = {input.data()};
    ReduceBuffers(inputs, 1, want.data(), count, dtype, reduce_op);
  }

  absl::StatusOr<std::unique_ptr<Work>> work;
  const CommBuffer in = Buffer(d_input.get(), count, dtype, stream_);
  const CommBuffer out = Buffer(d_output.get(), count, dtype, stream_);
  bool in_place = false;
  switch (op) {
    case Op::kAllReduceSum:
    case Op::kAllReduceAvg:
    case Op::kAllReduceMax:
      work = comm_->AllReduce(in, reduce_op, Options());
      in_place = true;
      break;
    case Op::kReduceScatterSum:
    case Op::kReduceScatterAvg:
    case Op::kReduceScatterMax:
      work = comm_->ReduceScatter(in, out, reduce_op, Options());
      break;
    case Op::kAllGather:
      work = comm_->AllGather(in, out, Options());
      break;
    case Op::kBroadcast:
      work = comm_->Broadcast(in, /*root=*/0, Options());
      in_place = true;
      break;
  }
  ASSERT_THAT(work, IsOk());
  ASSERT_THAT((*work)->Wait(absl::Minutes(1)), IsOk());
  EXPECT_TRUE((*work)->IsCompleted());
  EXPECT_TRUE(SameValues(in_place ? d_input.ToHost() : d_output.ToHost(), want, dtype));
  if (!in_place) {
    EXPECT_EQ(d_input.ToHost(), input) << "the input changed";
  }
  EXPECT_THAT(comm_->AsyncError(), IsOk());
}

std::string OpTestName(const ::testing::TestParamInfo<std::tuple<Op, DType, int64_t>>& info) {
  return absl::StrCat(OpName(std::get<0>(info.param)), "_", DTypeName(std::get<1>(info.param)), "_",
                      std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(
    Reductions, NcclOpTest,
    ::testing::Combine(::testing::Values(Op::kAllReduceSum, Op::kAllReduceAvg, Op::kAllReduceMax,
                                         Op::kReduceScatterSum, Op::kReduceScatterAvg,
                                         Op::kReduceScatterMax),
                       ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                       ::testing::Values(0, 1, 4, 1000, int64_t{1} << 20)),
    OpTestName);

INSTANTIATE_TEST_SUITE_P(DataMovement, NcclOpTest,
                         ::testing::Combine(::testing::Values(Op::kAllGather, Op::kBroadcast),
                                            ::testing::Values(DType::kF32, DType::kBF16,
                                                              DType::kF16, DType::kI32,
                                                              DType::kU16),
                                            ::testing::Values(0, 1, 4, 1000, int64_t{1} << 20)),
                         OpTestName);

// A null stream runs on the internal stream, ordered with the legacy default stream: the data
// written by a plain cudaMemcpy is seen, and the result is there after Wait.
TEST_F(NcclWorldTest, NullStreamUsesTheInternalStream) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    const Bytes input = MakeData(dtype, 1000, 3);
    DeviceBytes d_buffer(input);
    Bytes want(input.size());
    const void* inputs[] = {input.data()};
    ReduceBuffers(inputs, 1, want.data(), 1000, dtype, ReduceOp::kAvg);
    absl::StatusOr<std::unique_ptr<Work>> work =
        comm_->AllReduce(Buffer(d_buffer.get(), 1000, dtype, nullptr), ReduceOp::kAvg, Options());
    ASSERT_THAT(work, IsOk());
    ASSERT_THAT((*work)->Wait(), IsOk());
    EXPECT_TRUE(SameValues(d_buffer.ToHost(), want, dtype));
  }
}

TEST_F(NcclWorldTest, InPlaceAllGather) {
  const Bytes input = MakeData(DType::kF32, 257, 4);
  DeviceBytes d_buffer(input);
  const CommBuffer whole = Buffer(d_buffer.get(), 257, DType::kF32, stream_);
  absl::StatusOr<std::unique_ptr<Work>> work = comm_->AllGather(whole, whole, Options());
  ASSERT_THAT(work, IsOk());
  ASSERT_THAT((*work)->Wait(), IsOk());
  EXPECT_EQ(d_buffer.ToHost(), input);
}

TEST_F(NcclWorldTest, BarrierCompletes) {
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::unique_ptr<Work>> work = comm_->Barrier(Options());
    ASSERT_THAT(work, IsOk());
    EXPECT_THAT((*work)->Wait(absl::Seconds(30)), IsOk());
  }
}

TEST_F(NcclWorldTest, ManyOperationsInFlight) {
  constexpr int kOps = 16;
  std::vector<std::unique_ptr<DeviceBytes>> buffers;
  std::vector<std::unique_ptr<Work>> works;
  const Bytes input = MakeData(DType::kBF16, 4096, 9);
  for (int i = 0; i < kOps; ++i) {
    buffers.push_back(std::make_unique<DeviceBytes>(input));
    absl::StatusOr<std::unique_ptr<Work>> work = comm_->AllReduce(
        Buffer(buffers.back()->get(), 4096, DType::kBF16, stream_), ReduceOp::kSum, Options());
    ASSERT_THAT(work, IsOk());
    works.push_back(*std::move(work));
  }
  for (int i = kOps - 1; i >= 0; --i) EXPECT_THAT(works[i]->Wait(), IsOk()) << i;
  for (const auto& b : buffers) EXPECT_TRUE(SameValues(b->ToHost(), input, DType::kBF16));
}

// Bad arguments fail at once, before CUDA, and leave the communicator healthy.
TEST_F(NcclWorldTest, BadArgumentsLeaveTheCommunicatorHealthy) {
  DeviceBytes d(4096);
  const auto invalid = [](absl::string_view what) {
    return StatusIs(absl::StatusCode::kInvalidArgument,
                    ::testing::AllOf(HasSubstr("group 'world'"), HasSubstr(std::string(what))));
  };
  EXPECT_THAT(
      comm_->AllReduce(Buffer(d.get(), 16, DType::kI32, stream_), ReduceOp::kSum, Options()),
      invalid("i32"));
  CommBuffer on_cpu = Buffer(d.get(), 16, DType::kF32, stream_);
  on_cpu.device = Device{DeviceType::kCpu, 0};
  EXPECT_THAT(comm_->AllReduce(on_cpu, ReduceOp::kSum, Options()), invalid("CUDA"));
  EXPECT_THAT(
      comm_->ReduceScatter(Buffer(d.get(), 16, DType::kF32, stream_),
                           Buffer(d.get(), 8, DType::kF32, stream_), ReduceOp::kSum, Options()),
      invalid("16"));
  EXPECT_THAT(comm_->Broadcast(Buffer(d.get(), 16, DType::kF32, stream_), 1, Options()),
              invalid("root 1"));
  // World size 1: the only rank is this one, and nobody sends to itself.
  EXPECT_THAT(comm_->Send(Buffer(d.get(), 16, DType::kF32, stream_), 0, 7, Options()),
              invalid("this rank"));
  EXPECT_THAT(comm_->Recv(Buffer(d.get(), 16, DType::kF32, stream_), 0, 7, Options()),
              invalid("this rank"));
  EXPECT_THAT(comm_->Split({0, 0}, "dup", Options()), invalid("ascending"));
  EXPECT_THAT(comm_->AsyncError(), IsOk());
  absl::StatusOr<std::unique_ptr<Work>> work = comm_->Barrier(Options());
  ASSERT_THAT(work, IsOk());
  EXPECT_THAT((*work)->Wait(), IsOk());
}

TEST_F(NcclWorldTest, SplitMakesAWorkingSubgroup) {
  absl::StatusOr<std::unique_ptr<Communicator>> sub = comm_->Split({0}, "dp", Options());
  ASSERT_THAT(sub, IsOk());
  ASSERT_NE(*sub, nullptr);
  EXPECT_EQ((*sub)->name(), "dp");
  EXPECT_EQ((*sub)->rank(), 0);
  EXPECT_EQ((*sub)->size(), 1);
  EXPECT_EQ((*sub)->backend(), "nccl");
  const Bytes input = MakeData(DType::kF16, 1000, 5);
  DeviceBytes d(input);
  Bytes want(input.size());
  const void* inputs[] = {input.data()};
  ReduceBuffers(inputs, 1, want.data(), 1000, DType::kF16, ReduceOp::kMax);
  absl::StatusOr<std::unique_ptr<Work>> work =
      (*sub)->AllReduce(Buffer(d.get(), 1000, DType::kF16, stream_), ReduceOp::kMax, Options());
  ASSERT_THAT(work, IsOk());
  ASSERT_THAT((*work)->Wait(), IsOk());
  EXPECT_TRUE(SameValues(d.ToHost(), want, DType::kF16));
  // The parent still works after the child is gone.
  sub->reset();
  work = comm_->Barrier(Options());
  ASSERT_THAT(work, IsOk());
  EXPECT_THAT((*work)->Wait(), IsOk());
}

TEST_F(NcclWorldTest, WorkOutlivesItsCommunicator) {
  store::InMemoryStore store;
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> comm =
      NcclCommunicator::Create(&store, 0, 1, "short-lived", kDevice);
  ASSERT_THAT(comm, IsOk());
  const Bytes input = MakeData(DType::kF32, 1 << 16, 6);
  DeviceBytes d(input);
  absl::StatusOr<std::unique_ptr<Work>> work =
      (*comm)->AllReduce(Buffer(d.get(), 1 << 16, DType::kF32, stream_), ReduceOp::kSum, Options());
  ASSERT_THAT(work, IsOk());
  comm->reset();  // finalizes: waits for the AllReduce
  EXPECT_THAT((*work)->Wait(absl::Seconds(30)), IsOk());
  EXPECT_TRUE(SameValues(d.ToHost(), input, DType::kF32));
}

}  // namespace
}  // namespace dstrain::comm
