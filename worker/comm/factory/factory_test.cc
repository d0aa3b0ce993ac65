#include "worker/comm/factory/factory.h"

#include <stdlib.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/comm/factory/cpu_communicator.h"
#include "worker/store/in_memory_store.h"

namespace dstrain::comm {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

// Shared memory is the default for ranks on one host; these tests start from no DSTRAIN_SHM.
class ShmByDefault : public ::testing::Test {
 protected:
  void SetUp() override { unsetenv("DSTRAIN_SHM"); }
};

// Every rank of these groups is on this host: shared memory.
TEST_F(ShmByDefault, CpuMemoryOnOneHostGetsShm) {
  store::InMemoryStore store;
  auto c = CreateCommunicator(Device::Cpu(), &store, 0, 1, "dp", GroupOptions());
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ((*c)->backend(), "shm");
  EXPECT_EQ((*c)->size(), 1);
  EXPECT_EQ((*c)->name(), "dp");
}

TEST_F(ShmByDefault, TwoRanksOnOneHostAgreeOnShm) {
  store::InMemoryStore store;
  std::vector<std::string> backends(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto c = CreateCommunicator(Device::Cpu(), &store, r, 2, "dp", GroupOptions());
      ASSERT_THAT(c, IsOk());
      backends[r] = std::string((*c)->backend());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(backends[0], "shm");
  EXPECT_EQ(backends[1], "shm");
}

// Ranks whose host identities differ (here: the bind address) use Gloo, all of them.
TEST_F(ShmByDefault, DifferentIdentitiesGetGloo) {
  EXPECT_NE(CpuHostIdentity("127.0.0.1"), CpuHostIdentity("127.0.0.2"));
  store::InMemoryStore store;
  ASSERT_THAT(store.Set("cpu_group/dp/1", CpuHostIdentity("10.1.2.3")), IsOk());
  GroupOptions options;
  options.timeout = absl::Seconds(5);
  // Only rank 0 joins: Gloo's rendezvous then times out, which shows Gloo was chosen.
  options.timeout = absl::Milliseconds(300);
  auto c = CreateCommunicator(Device::Cpu(), &store, 0, 2, "dp", options);
  EXPECT_THAT(c, StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("GlooCommunicator")));
}

TEST(CreateCommunicator, DstrainShmZeroForcesGloo) {
  setenv("DSTRAIN_SHM", "0", 1);
  store::InMemoryStore store;
  auto c = CreateCommunicator(Device::Cpu(), &store, 0, 1, "dp", GroupOptions());
  unsetenv("DSTRAIN_SHM");
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ((*c)->backend(), "gloo");
}

TEST(CreateCommunicator, CudaMemoryGetsNcclOrAClearError) {
  store::InMemoryStore store;
  GroupOptions options;
  options.timeout = absl::Seconds(5);
  auto c = CreateCommunicator(Device::Cuda(0), &store, 0, 1, "dp", options);
#if DSTRAIN_HAVE_NCCL
  // With a GPU: a one-rank NCCL group; without one, the CUDA runtime's refusal.
  if (c.ok()) {
    EXPECT_EQ((*c)->backend(), "nccl");
  } else {
    EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition) << c.status();
  }
#else
  EXPECT_THAT(c, StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("NCCL")));
#endif
}

}  // namespace
}  // namespace dstrain::comm
