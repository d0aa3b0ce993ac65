#include "worker/comm/factory/factory.h"

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/store/in_memory_store.h"

namespace dstrain::comm {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

TEST(CreateCommunicator, CpuMemoryGetsGloo) {
  store::InMemoryStore store;
  auto c = CreateCommunicator(Device::Cpu(), &store, 0, 1, "dp", GroupOptions());
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ((*c)->backend(), "gloo");
  EXPECT_EQ((*c)->size(), 1);
  EXPECT_EQ((*c)->name(), "dp");
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
