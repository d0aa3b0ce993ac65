#include "worker/tensor/arena_allocator.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
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

// Large blocks carved from the region start at the region's own sequence of cache colours
// (allocator.h), each whole inside the region and apart from the others (written end to end and
// read back); BlockBytes is the room they take, so a region sized by it holds them all, and freeing
// them in any order gives the whole region back.
TEST(ArenaAllocatorTest, LargeBlocksAreColouredInsideTheRoomBlockBytesGivesThem) {
  CpuAllocator device;
  const size_t sizes[] = {300 << 10, 100, 256 << 10, 1 << 20};  // the second is small: uncoloured
  size_t room = 0;
  for (size_t b : sizes) room += ArenaAllocator::BlockBytes(b);
  EXPECT_EQ(ArenaAllocator::BlockBytes(100), 128u);
  EXPECT_EQ(ArenaAllocator::BlockBytes(256 << 10), (256u << 10) + kColoredExtraBytes);
  Region region(room);
  ArenaAllocator arena(region.base, room, &device);
  std::vector<void*> blocks;
  std::vector<size_t> colours;
  for (size_t i = 0; i < 4; ++i) {
    absl::StatusOr<void*> p = arena.Allocate(sizes[i], MemoryCategory::kGrads);
    ASSERT_THAT(p.status(), IsOk());
    ASSERT_TRUE(arena.Contains(*p)) << "block " << i << " fell back";
    ASSERT_TRUE(arena.Contains(static_cast<char*>(*p) + sizes[i] - 1)) << "block " << i;
    std::memset(*p, static_cast<int>(i + 1), sizes[i]);
    blocks.push_back(*p);
    if (sizes[i] >= kColorMinBytes) colours.push_back(CpuAllocator::ColorOffset(*p));
  }
  EXPECT_EQ(colours, (std::vector<size_t>{0, 2112, 4224}));
  for (size_t i = 0; i < 4; ++i) {
    const auto* c = static_cast<const unsigned char*>(blocks[i]);
    for (size_t j = 0; j < sizes[i]; j += 4093) ASSERT_EQ(c[j], i + 1) << "block " << i;
    ASSERT_EQ(c[sizes[i] - 1], i + 1) << "block " << i;
  }
  EXPECT_EQ(device.Stats().total_current(),
            static_cast<int64_t>(sizes[0] + sizes[1] + sizes[2] + sizes[3]));
  for (int i : {2, 0, 3, 1}) arena.Free(blocks[i], sizes[i], MemoryCategory::kGrads);
  EXPECT_EQ(device.Stats().total_current(), 0);
  absl::StatusOr<void*> whole =
      arena.Allocate(room, MemoryCategory::kOther);  // needs more: falls back
  ASSERT_THAT(whole.status(), IsOk());
  EXPECT_FALSE(arena.Contains(*whole));
  arena.Free(*whole, room, MemoryCategory::kOther);
  const size_t fits = room - kColoredExtraBytes;
  absl::StatusOr<void*> most = arena.Allocate(fits, MemoryCategory::kOther);
  ASSERT_THAT(most.status(), IsOk());
  EXPECT_TRUE(arena.Contains(*most));
  arena.Free(*most, fits, MemoryCategory::kOther);
}

}  // namespace
}  // namespace dstrain::tensor
