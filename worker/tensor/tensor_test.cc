#include "worker/tensor/tensor.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

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

// Large blocks are cache-coloured (allocator.h): eight in a row start at the eight offsets
// (k mod 8) · 2112 modulo 16 KiB, in turn, whatever the heap does; each is whole (written end to
// end: ASan checks the bounds) and frees cleanly; small blocks are only 64-byte aligned.
TEST(CpuAllocator, ConsecutiveLargeBlocksStartAtEveryColourInTurn) {
  CpuAllocator alloc;
  constexpr size_t kBytes = size_t{1} << 20;  // a power of two: the case colouring is for
  std::vector<void*> blocks;
  std::vector<size_t> offsets;
  for (int i = 0; i < 9; ++i) {
    auto p = alloc.Allocate(kBytes, MemoryCategory::kOptimizerState);
    ASSERT_TRUE(p.ok());
    std::memset(*p, 0xab, kBytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(*p) % 64, 0u);
    blocks.push_back(*p);
    offsets.push_back(CpuAllocator::ColorOffset(*p));
  }
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(offsets[i] % 2112, 0u) << offsets[i];
    EXPECT_EQ(offsets[i + 1], (offsets[i] / 2112 + 1) % 8 * 2112)
        << "block " << i << " at " << offsets[i] << ", the next at " << offsets[i + 1];
  }
  std::vector<size_t> first8(offsets.begin(), offsets.begin() + 8);
  std::sort(first8.begin(), first8.end());
  for (int c = 0; c < 8; ++c) EXPECT_EQ(first8[c], static_cast<size_t>(c) * 2112);
  EXPECT_EQ(offsets[8], offsets[0]);  // the ninth wraps around
  EXPECT_EQ(alloc.Stats().total_current(), static_cast<int64_t>(9 * kBytes));
  for (void* p : blocks) alloc.Free(p, kBytes, MemoryCategory::kOptimizerState);
  EXPECT_EQ(alloc.Stats().total_current(), 0);
  auto small = alloc.Allocate(1000, MemoryCategory::kOther);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(*small) % 64, 0u);
  alloc.Free(*small, 1000, MemoryCategory::kOther);
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

TEST(View, RowsSubRangesAndReshapes) {
  float data[24];
  for (int i = 0; i < 24; ++i) data[i] = static_cast<float>(i);
  const View v(data, DType::kF32, {2, 3, 4});
  EXPECT_EQ(v.numel(), 24);
  EXPECT_EQ(v.bytes(), 96u);
  EXPECT_EQ(v.dim(-1), 4);
  const View row = v[1];
  EXPECT_EQ(row.rank(), 2);
  EXPECT_EQ(row.as<float>()[0], 12.f);
  EXPECT_EQ(row[2].as<float>()[3], 23.f);
  const View sub = v.Sub(5, 7);
  EXPECT_EQ(sub.numel(), 7);
  EXPECT_EQ(sub.as<float>()[0], 5.f);
  EXPECT_EQ(v.Reshape({6, 4})[5].as<float>()[0], 20.f);
  EXPECT_EQ(v.DebugString(), "f32[2,3,4]@cpu");
  EXPECT_EQ(View(static_cast<void*>(nullptr), DType::kBF16, {8}, Device::Cuda(1)).DebugString(),
            "bf16[8]@cuda:1");
  EXPECT_EQ(v.As(DType::kI32).dtype(), DType::kI32);
  EXPECT_TRUE(View().empty());
}

TEST(View, OfATensorCarriesItsDevice) {
  CpuAllocator alloc;
  auto t = Tensor::Zeros(&alloc, DType::kBF16, {3, 5}, MemoryCategory::kOther);
  ASSERT_TRUE(t.ok());
  const View v = t->view();
  EXPECT_EQ(v.data(), t->raw());
  EXPECT_EQ(v.shape(), Shape({3, 5}));
  EXPECT_EQ(v.dtype(), DType::kBF16);
  EXPECT_TRUE(v.device().is_cpu());
  EXPECT_TRUE(Tensor().view().empty());
}

TEST(ViewDeathTest, OutOfRangeIsAnInvariantViolation) {
  float data[4] = {};
  const View v(data, DType::kF32, {4});
  EXPECT_DEATH(v.Sub(2, 3), "");
  EXPECT_DEATH(v.Reshape({3}), "");
}

}  // namespace
}  // namespace dstrain::tensor
