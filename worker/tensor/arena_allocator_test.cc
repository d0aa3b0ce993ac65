#include "worker/tensor/arena_allocator.h"

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"

namespace dstrain::tensor {
namespace {

using ::dstrain::testing::IsOk;

struct Region {
  explicit Region(size_t bytes) : base(static_cast<char*>(std::aligned_alloc(64, bytes))) {}
  ~Region() { std::free(base); }
  char* base;
};

TEST(ArenaAllocatorTest, CarvesTheRegionThenFallsBackAndCountsInTheFallback) {
  CpuAllocator device;
  Region region(1024);
  ArenaAllocator arena(region.base, 1024, &device);
  absl::StatusOr<void*> a = arena.Allocate(100, MemoryCategory::kGrads);  // 128 bytes
  absl::StatusOr<void*> b = arena.Allocate(896, MemoryCategory::kCommBuffers);
  ASSERT_THAT(a.status(), IsOk());
  ASSERT_THAT(b.status(), IsOk());
  EXPECT_EQ(*a, region.base);
  EXPECT_EQ(*b, region.base + 128);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(*b) % 64, 0u);
  // The region is full: the next block is the device's own.
  absl::StatusOr<void*> c = arena.Allocate(64, MemoryCategory::kGrads);
  ASSERT_THAT(c.status(), IsOk());
  EXPECT_FALSE(arena.Contains(*c));
  const MemoryStats stats = device.Stats();
  EXPECT_EQ(stats.current[static_cast<int>(MemoryCategory::kGrads)], 164);
  EXPECT_EQ(stats.current[static_cast<int>(MemoryCategory::kCommBuffers)], 896);
  EXPECT_EQ(arena.Stats().total_current(), 0);
  arena.Free(*c, 64, MemoryCategory::kGrads);
  arena.Free(*a, 100, MemoryCategory::kGrads);
  arena.Free(*b, 896, MemoryCategory::kCommBuffers);
  EXPECT_EQ(device.Stats().total_current(), 0);
  EXPECT_EQ(device.Stats().peak[static_cast<int>(MemoryCategory::kGrads)], 164);
  // Freed blocks coalesce: the whole region is one block again.
  absl::StatusOr<void*> whole = arena.Allocate(1024, MemoryCategory::kGrads);
  ASSERT_THAT(whole.status(), IsOk());
  EXPECT_EQ(*whole, region.base);
  arena.Free(*whole, 1024, MemoryCategory::kGrads);
}

TEST(ArenaAllocatorTest, FreeBlocksJoinTheirNeighboursInAnyOrder) {
  CpuAllocator device;
  Region region(64 * 8);
  ArenaAllocator arena(region.base, 64 * 8, &device);
  std::vector<void*> blocks;
  for (int i = 0; i < 8; ++i) {
    absl::StatusOr<void*> p = arena.Allocate(64, MemoryCategory::kOther);
    ASSERT_THAT(p.status(), IsOk());
    ASSERT_TRUE(arena.Contains(*p));
    blocks.push_back(*p);
  }
  for (int i : {1, 3, 2, 6, 0, 7, 5, 4}) arena.Free(blocks[i], 64, MemoryCategory::kOther);
  absl::StatusOr<void*> whole = arena.Allocate(64 * 8, MemoryCategory::kOther);
  ASSERT_THAT(whole.status(), IsOk());
  EXPECT_EQ(*whole, region.base);
  arena.Zero(*whole, 64 * 8);
  arena.Free(*whole, 64 * 8, MemoryCategory::kOther);
}

}  // namespace
}  // namespace dstrain::tensor
