#include "worker/tensor/tensor.h"

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"

namespace dstrain::tensor {
namespace {

using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

TEST(Tensor, AccountsBytesByCategoryAndPeak) {
  CpuAllocator alloc;
  {
    auto p = Tensor::Zeros(&alloc, DType::kF32, {4, 8}, MemoryCategory::kParams);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->numel(), 32);
    EXPECT_EQ(p->data<float>()[31], 0.f);
    auto g = Tensor::Empty(&alloc, DType::kBF16, {10}, MemoryCategory::kGrads);
    ASSERT_TRUE(g.ok());
    MemoryStats s = alloc.Stats();
    EXPECT_EQ(s.current[int(MemoryCategory::kParams)], 128);
    EXPECT_EQ(s.current[int(MemoryCategory::kGrads)], 20);
    EXPECT_EQ(s.total_current(), 148);
    EXPECT_EQ(p->DebugString(), "f32[4,8]");
  }
  MemoryStats s = alloc.Stats();
  EXPECT_EQ(s.total_current(), 0);
  EXPECT_EQ(s.peak[int(MemoryCategory::kParams)], 128);
  EXPECT_EQ(s.CurrentJson(),
            "{\"params\":0,\"grads\":0,\"optimizer_state\":0,\"activations\":0,"
            "\"comm_buffers\":0,\"gathered_params\":0,\"other\":0}");
}

// The total peak is the largest sum at any one time, not the sum (or max) of category peaks.
TEST(Tensor, TotalPeakIsThePeakOfTheSum) {
  CpuAllocator alloc;
  {
    auto a = Tensor::Empty(&alloc, DType::kF32, {25}, MemoryCategory::kParams);  // 100 bytes
    ASSERT_TRUE(a.ok());
  }
  auto g = Tensor::Empty(&alloc, DType::kF32, {10}, MemoryCategory::kGrads);  // 40 bytes
  ASSERT_TRUE(g.ok());
  {
    auto b = Tensor::Empty(&alloc, DType::kF32, {20}, MemoryCategory::kGatheredParams);  // 80
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(alloc.Stats().total_peak, 120);
  }
  MemoryStats s = alloc.Stats();
  EXPECT_EQ(s.total_peak, 120);
  EXPECT_EQ(s.peak[int(MemoryCategory::kParams)], 100);
  EXPECT_EQ(s.peak[int(MemoryCategory::kGatheredParams)], 80);
  alloc.ResetPeaks();
  EXPECT_EQ(alloc.Stats().total_peak, 40);
}

TEST(Tensor, MoveTransfersOwnership) {
  CpuAllocator alloc;
  auto a = Tensor::Zeros(&alloc, DType::kI32, {3}, MemoryCategory::kActivations);
  ASSERT_TRUE(a.ok());
  Tensor b = std::move(*a);
  EXPECT_TRUE(b.defined());
  EXPECT_FALSE(a->defined());
  EXPECT_EQ(alloc.Stats().total_current(), 12);
}

TEST(Tensor, LimitAndBadShapesAreErrors) {
  CpuAllocator alloc(/*limit_bytes=*/100);
  EXPECT_THAT(Tensor::Empty(&alloc, DType::kF32, {26}, MemoryCategory::kOptimizerState),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("optimizer_state")));
  EXPECT_THAT(Tensor::Empty(&alloc, DType::kF32, {2, -1}, MemoryCategory::kOther),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
  EXPECT_THAT(Tensor::Empty(&alloc, DType::kF32, {1 << 30, 1 << 30}, MemoryCategory::kOther),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too large")));
  EXPECT_EQ(alloc.Stats().total_current(), 0);
}

}  // namespace
}  // namespace dstrain::tensor
