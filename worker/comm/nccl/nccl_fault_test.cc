// NcclCommunicator's failure paths on one GPU: a rank that never joins (init bounded by its
// timeout), a collective that cannot complete (here: queued behind a stream that a host function
// holds, which looks to the communicator exactly like a peer that never arrives), Wait's own
// timeout, Abort, and destruction with work in flight. Skips itself without a CUDA device.
#include <cuda_runtime.h>

#include <atomic>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "worker/comm/communicator.h"
#include "worker/comm/nccl/nccl_communicator.h"
#include "worker/store/in_memory_store.h"

namespace dstrain::comm {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using DeviceFloats = kernels::gpu::testing::DeviceBuffer<float>;

constexpr int kDevice = 0;

// How long a StreamGate holds its stream at most. A held stream stands in for a peer that never
// arrives; unlike a real NCCL kernel waiting for a peer, it cannot be killed by ncclCommAbort, so
// should NCCL's abort or finalize wait for the stream, they finish once the gate gives up. The
// bounds below allow for that: what matters is that nothing hangs and the codes are right.
constexpr absl::Duration kGateGiveUp = absl::Seconds(10);

// Holds `stream` at a host function until Open(), or until `give_up` passes (so that a broken
// communicator cannot hang the test). The destructor opens it and drains the stream.
class StreamGate {
 public:
  StreamGate(cudaStream_t stream, absl::Duration give_up) : stream_(stream) {
    EXPECT_EQ(cudaLaunchHostFunc(stream_, &Hold, &open_), cudaSuccess);
    const absl::Time deadline = absl::Now() + give_up;
    opener_ = std::thread([this, deadline] {
      while (!open_.load() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
      open_.store(true);
    });
  }
  ~StreamGate() {
    Open();
    opener_.join();
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  }
  void Open() { open_.store(true); }

 private:
  static void CUDART_CB Hold(void* open) {
    while (!static_cast<std::atomic<bool>*>(open)->load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  cudaStream_t stream_;
  std::atomic<bool> open_{false};
  std::thread opener_;
};

class NcclFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DT_SKIP_WITHOUT_CUDA_DEVICE();
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  std::unique_ptr<NcclCommunicator> MakeWorld(absl::string_view name,
                                              const NcclOptions& options = NcclOptions()) {
    absl::StatusOr<std::unique_ptr<NcclCommunicator>> comm =
        NcclCommunicator::Create(&store_, 0, 1, name, kDevice, options);
    EXPECT_THAT(comm, IsOk());
    return comm.ok() ? *std::move(comm) : nullptr;
  }

  CommBuffer Floats(DeviceFloats& d) {
    CommBuffer b;
    b.data = d.get();
    b.count = d.size();
    b.dtype = DType::kF32;
    b.device = Device{DeviceType::kCuda, kDevice};
    b.stream = stream_;
    return b;
  }

  static CommOptions Timeout(absl::Duration timeout) {
    CommOptions options;
    options.timeout = timeout;
    return options;
  }

  store::InMemoryStore store_;
  cudaStream_t stream_ = nullptr;
};

// Size 2 where only rank 0 ever calls Create: NCCL's init waits for rank 1 until the timeout, then
// the half-made communicator is aborted. Not a hang.
TEST_F(NcclFaultTest, InitTimesOutWhenAPeerNeverJoins) {
  NcclOptions options;
  options.init_timeout = absl::Seconds(3);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> comm =
      NcclCommunicator::Create(&store_, 0, 2, "lonely", kDevice, options);
  const absl::Duration took = absl::Now() - start;
  EXPECT_THAT(comm, StatusIs(absl::StatusCode::kDeadlineExceeded,
                             AllOf(HasSubstr("group 'lonely'"), HasSubstr("rank 0 of 2"),
                                   HasSubstr("ncclCommInitRankConfig"),
                                   HasSubstr("NCCL cannot tell which rank"))));
  EXPECT_GE(took, absl::Seconds(3));
  EXPECT_LT(took, absl::Seconds(30)) << "init plus abort took " << took;
  // The device is still usable.
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::unique_ptr<NcclCommunicator> world = MakeWorld("after-lonely");
  ASSERT_NE(world, nullptr);
  absl::StatusOr<std::unique_ptr<Work>> work = world->Barrier(Timeout(absl::Seconds(30)));
  ASSERT_THAT(work, IsOk());
  EXPECT_THAT((*work)->Wait(), IsOk());
}

// A collective that cannot complete fails within its timeout with kDeadlineExceeded, aborts the
// communicator, and every later call fails with kAborted naming the first error.
TEST_F(NcclFaultTest, StuckCollectiveTimesOutAndPoisons) {
  std::unique_ptr<NcclCommunicator> comm = MakeWorld("stuck");
  ASSERT_NE(comm, nullptr);
  DeviceFloats d(1000);
  StreamGate gate(stream_, kGateGiveUp);
  absl::StatusOr<std::unique_ptr<Work>> work =
      comm->AllReduce(Floats(d), ReduceOp::kSum, Timeout(absl::Milliseconds(500)));
  ASSERT_THAT(work, IsOk());
  const absl::Time start = absl::Now();
  const absl::Status waited = (*work)->Wait();
  const absl::Duration took = absl::Now() - start;
  EXPECT_THAT(waited, StatusIs(absl::StatusCode::kDeadlineExceeded,
                               AllOf(HasSubstr("AllReduce(sum)"), HasSubstr("group 'stuck'"),
                                     HasSubstr("did not complete within 500ms"),
                                     HasSubstr("NCCL cannot tell which rank"))));
  EXPECT_LT(took, kGateGiveUp + absl::Seconds(20)) << took;
  EXPECT_TRUE((*work)->IsCompleted());
  EXPECT_EQ((*work)->Wait().code(), absl::StatusCode::kDeadlineExceeded);  // the same result
  EXPECT_EQ(comm->AsyncError(), waited);
  EXPECT_THAT(comm->Barrier(Timeout(absl::Seconds(5))),
              StatusIs(absl::StatusCode::kAborted,
                       AllOf(HasSubstr("Barrier"), HasSubstr("did not complete within"))));
  gate.Open();
}

// Wait's own timeout only ends that wait: the operation goes on and completes later.
TEST_F(NcclFaultTest, WaitTimeoutLeavesTheOperationRunning) {
  std::unique_ptr<NcclCommunicator> comm = MakeWorld("patient");
  ASSERT_NE(comm, nullptr);
  DeviceFloats d(std::vector<float>(1000, 2.5f));
  StreamGate gate(stream_, kGateGiveUp);
  absl::StatusOr<std::unique_ptr<Work>> work =
      comm->AllReduce(Floats(d), ReduceOp::kAvg, Timeout(absl::Minutes(1)));
  ASSERT_THAT(work, IsOk());
  EXPECT_THAT((*work)->Wait(absl::Milliseconds(100)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("still running")));
  EXPECT_FALSE((*work)->IsCompleted());
  EXPECT_THAT(comm->AsyncError(), IsOk());
  gate.Open();
  EXPECT_THAT((*work)->Wait(absl::Seconds(30)), IsOk());
  EXPECT_EQ(d.ToHost(), std::vector<float>(1000, 2.5f));
}

// Abort fails the pending operation and every later one with kAborted and the reason.
TEST_F(NcclFaultTest, AbortFailsPendingAndLaterOperations) {
  std::unique_ptr<NcclCommunicator> comm = MakeWorld("aborted");
  ASSERT_NE(comm, nullptr);
  DeviceFloats d(1000);
  StreamGate gate(stream_, kGateGiveUp);
  absl::StatusOr<std::unique_ptr<Work>> pending =
      comm->AllReduce(Floats(d), ReduceOp::kMax, Timeout(absl::Minutes(1)));
  ASSERT_THAT(pending, IsOk());
  const absl::Status reason = absl::CancelledError("the coordinator restarts the job");
  comm->Abort(reason);
  EXPECT_EQ(comm->AsyncError(), reason);
  EXPECT_THAT(
      (*pending)->Wait(absl::Seconds(10)),
      StatusIs(absl::StatusCode::kAborted,
               AllOf(HasSubstr("group 'aborted'"), HasSubstr("the coordinator restarts the job"))));
  EXPECT_THAT(comm->AllReduce(Floats(d), ReduceOp::kSum, Timeout(absl::Seconds(5))),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("the coordinator restarts the job")));
  EXPECT_THAT(comm->Split({0}, "child", Timeout(absl::Seconds(5))),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("the coordinator restarts the job")));
  comm->Abort(absl::InternalError("second reason"));  // idempotent; the first error stays
  EXPECT_EQ(comm->AsyncError(), reason);
  gate.Open();
  // Even once the operation ran, it stays failed: the abort came first.
  EXPECT_EQ((*pending)->Wait().code(), absl::StatusCode::kAborted);
}

// Abort from another thread while this one waits.
TEST_F(NcclFaultTest, AbortFromAnotherThreadWakesAWaiter) {
  std::unique_ptr<NcclCommunicator> comm = MakeWorld("abort-thread");
  ASSERT_NE(comm, nullptr);
  DeviceFloats d(1000);
  StreamGate gate(stream_, kGateGiveUp);
  absl::StatusOr<std::unique_ptr<Work>> pending =
      comm->AllReduce(Floats(d), ReduceOp::kSum, Timeout(absl::Minutes(1)));
  ASSERT_THAT(pending, IsOk());
  std::thread aborter([&] {
    absl::SleepFor(absl::Milliseconds(200));
    comm->Abort(absl::UnavailableError("peer lost"));
  });
  const absl::Time start = absl::Now();
  EXPECT_THAT((*pending)->Wait(), StatusIs(absl::StatusCode::kAborted, HasSubstr("peer lost")));
  EXPECT_LT(absl::Now() - start, kGateGiveUp + absl::Seconds(20));
  aborter.join();
  gate.Open();
}

// Destroying a communicator with work in flight waits destroy_timeout, then aborts: the work
// fails with kAborted instead of hanging.
TEST_F(NcclFaultTest, DestroyWithWorkInFlightIsBounded) {
  NcclOptions options;
  options.destroy_timeout = absl::Seconds(1);
  std::unique_ptr<NcclCommunicator> comm = MakeWorld("destroyed", options);
  ASSERT_NE(comm, nullptr);
  DeviceFloats d(1000);
  StreamGate gate(stream_, kGateGiveUp);
  absl::StatusOr<std::unique_ptr<Work>> pending =
      comm->AllReduce(Floats(d), ReduceOp::kAvg, Timeout(absl::Minutes(1)));
  ASSERT_THAT(pending, IsOk());
  const absl::Time start = absl::Now();
  comm.reset();
  EXPECT_LT(absl::Now() - start, kGateGiveUp + absl::Seconds(20));
  gate.Open();
  const absl::Status waited = (*pending)->Wait(absl::Seconds(30));
  // If NCCL's finalize did not depend on the held stream, the work simply completed.
  if (!waited.ok()) {
    EXPECT_THAT(waited, StatusIs(absl::StatusCode::kAborted, HasSubstr("destroying")));
  }
}

}  // namespace
}  // namespace dstrain::comm
