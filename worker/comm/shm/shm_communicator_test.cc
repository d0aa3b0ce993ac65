#include "worker/comm/shm/shm_communicator.h"

#include <memory>

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
