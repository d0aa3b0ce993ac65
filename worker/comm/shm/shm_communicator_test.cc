#include "worker/comm/shm/shm_communicator.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
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

ShmOptions TestOptions() {
  ShmOptions o;
  o.timeout = absl::Seconds(30);
  // Small chunks and rings, so the suite's 4 MiB operations take many steps and wrap the rings.
  o.chunk_bytes = 64 << 10;
  o.ring_bytes = 16 << 10;
  return o;
}

std::shared_ptr<const CommBackend> ShmBackend() {
  auto backend = std::make_shared<CommBackend>();
  backend->name = "shm";
  backend->new_group = [](int size) {
    auto store = std::make_shared<store::InMemoryStore>();
    return [store, size](int rank) -> absl::StatusOr<std::unique_ptr<Communicator>> {
      absl::StatusOr<std::unique_ptr<ShmCommunicator>> c =
          ShmCommunicator::Create(store.get(), rank, size, "world", TestOptions());
      if (!c.ok()) return c.status();
      return std::unique_ptr<Communicator>(*std::move(c));
    };
  };
  return backend;
}

INSTANTIATE_TEST_SUITE_P(Shm, CommConformanceTest,
                         ::testing::ValuesIn(ConformanceParams(ShmBackend(),
                                                               {1, 2, 3, 4, 5, 6, 7, 8})),
                         ConformanceParamName);

// Ranks as threads of one process: each runs fn(rank, communicator); the communicators are
// destroyed after every fn returned.
void RunGroup(int size, const std::vector<ShmOptions>& options,
              const std::function<void(int, ShmCommunicator&)>& fn) {
  store::InMemoryStore store;
  std::vector<std::unique_ptr<ShmCommunicator>> comms(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      absl::StatusOr<std::unique_ptr<ShmCommunicator>> c =
          ShmCommunicator::Create(&store, r, size, "world", options[r]);
      ASSERT_THAT(c.status(), IsOk());
      comms[r] = *std::move(c);
      fn(r, *comms[r]);
    });
  }
  for (std::thread& t : threads) t.join();
}

absl::Status AllReduceSum(ShmCommunicator& comm, float* data, int64_t count) {
  absl::StatusOr<std::unique_ptr<Work>> w =
      comm.AllReduce(CommBuffer{data, count}, ReduceOp::kSum, CommOptions{absl::Seconds(30)});
  return w.ok() ? (*w)->Wait() : w.status();
}

// The conformance suite checks the results on host buffers; this checks which path ran: shared
// when every rank's buffer lies in one, staged when one rank's does not, when the buffer is
// small, or when the group turned shared buffers off.
TEST(ShmCommunicatorTest, CollectivesOnHostBuffersOfEveryRankSkipTheStaging) {
  constexpr int kRanks = 3;
  constexpr int64_t kCount = 100000;
  // Each rank's host buffer holds rank + 1 everywhere, summed over the group: 6 on every rank,
  // and `shared` collectives so far ran on shared buffers.
  auto sum_in_host_buffer = [](ShmCommunicator& comm, int rank, int64_t shared) {
    absl::StatusOr<std::unique_ptr<HostBuffer>> host =
        comm.AllocateHostBuffer(kCount * 4, CommOptions{absl::Seconds(30)});
    EXPECT_THAT(host.status(), IsOk());
    if (!host.ok()) return host.status();
    float* data = static_cast<float*>((*host)->data());
    std::fill(data, data + kCount, rank + 1.f);
    absl::Status s = AllReduceSum(comm, data, kCount);
    EXPECT_EQ(comm.shared_collectives(), shared);
    EXPECT_TRUE(std::all_of(data, data + kCount, [](float v) { return v == 6.f; }));
    return s;
  };
  std::vector<ShmOptions> options(kRanks, TestOptions());
  RunGroup(kRanks, options, [&](int rank, ShmCommunicator& comm) {
    ASSERT_THAT(sum_in_host_buffer(comm, rank, 1), IsOk());
    absl::StatusOr<std::unique_ptr<HostBuffer>> host =
        comm.AllocateHostBuffer(kCount * 4, CommOptions{absl::Seconds(30)});
    ASSERT_THAT(host.status(), IsOk());
    float* data = static_cast<float*>((*host)->data());
    // Too small to be worth it: staged.
    ASSERT_THAT(AllReduceSum(comm, data, 100), IsOk());
    EXPECT_EQ(comm.shared_collectives(), 1);
    // Rank 1's buffer is its own: every rank stages.
    std::vector<float> plain(kCount, 1.f);
    ASSERT_THAT(AllReduceSum(comm, rank == 1 ? plain.data() : data, kCount), IsOk());
    EXPECT_EQ(comm.shared_collectives(), 1);
  });
  // With shared buffers off, AllocateHostBuffer gives plain memory: staged.
  for (ShmOptions& o : options) o.shared_buffers = false;
  RunGroup(kRanks, options, [&](int rank, ShmCommunicator& comm) {
    ASSERT_THAT(sum_in_host_buffer(comm, rank, 0), IsOk());
  });
}

TEST(ShmCommunicatorTest, CreateValidatesArguments) {
  store::InMemoryStore store;
  EXPECT_THAT(ShmCommunicator::Create(nullptr, 0, 1, "g", TestOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(ShmCommunicator::Create(&store, 1, 1, "g", TestOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(ShmCommunicator::Create(&store, 0, 1, "", TestOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
}

TEST(ShmCommunicatorTest, CreateTimesOutNamingTheRanksThatNeverJoined) {
  store::InMemoryStore store;
  ShmOptions options = TestOptions();
  options.timeout = absl::Milliseconds(300);
  EXPECT_THAT(ShmCommunicator::Create(&store, 0, 3, "lonely", options),
              StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::HasSubstr("[1, 2]")));
}

}  // namespace
}  // namespace dstrain::comm
