#include "kernels/common/threading.h"

#include <atomic>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/test_util.h"

namespace dstrain::kernels {
namespace {

TEST(SplitRangeTest, PiecesTileTheRangeAtAlignedBoundaries) {
  for (int64_t n : {0, 1, 15, 16, 17, 1000, 4097}) {
    for (int64_t parts : {1, 2, 3, 7}) {
      for (int64_t align : {1, 16}) {
        int64_t expect_begin = 0;
        for (int64_t p = 0; p < parts; ++p) {
          const Range r = SplitRange(n, parts, p, align);
          EXPECT_EQ(r.begin, expect_begin);
          EXPECT_LE(r.begin, r.end);
          if (r.end < n) {
            EXPECT_EQ(r.end % align, 0);
          }
          expect_begin = r.end;
        }
        EXPECT_EQ(expect_begin, n) << n << " " << parts << " " << align;
      }
    }
  }
}

TEST(ParallelForTest, VisitsEveryElementOnce) {
  testing::ScopedThreads threads(2);
  std::vector<std::atomic<int>> seen(10007);
  for (auto& s : seen) s = 0;
  ParallelFor(static_cast<int64_t>(seen.size()), 3, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) seen[i]++;
  });
  for (auto& s : seen) ASSERT_EQ(s.load(), 1);
}

TEST(ThreadsForTest, SmallWorkStaysOnOneThread) {
  EXPECT_EQ(ThreadsFor(100), 1);
  EXPECT_GE(ThreadsFor(int64_t{1} << 26), 1);
  EXPECT_LE(ThreadsFor(int64_t{1} << 26), KernelThreads());
}

TEST(ThreadScratchTest, GrowsAndIsAligned) {
  float* a = ThreadScratch(10);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  a[9] = 1.f;
  float* b = ThreadScratch(1 << 20);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 64, 0u);
  b[(1 << 20) - 1] = 2.f;
  EXPECT_EQ(ThreadScratch(5), b);  // no shrink
}

}  // namespace
}  // namespace dstrain::kernels
