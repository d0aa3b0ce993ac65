#include "common/random/rng.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace dstrain {
namespace {

TEST(Rng, KnownSplitMix64Values) {
  // Reference values of splitmix64 from seed 0 (as published with the algorithm).
  SplitMix64 x(0);
  EXPECT_EQ(x.Next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(x.Next(), 0x6e789e6aa1b965f4ULL);
}

TEST(Rng, DeterministicPerSeed) {
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) {
    const uint64_t x = a.NextU64();
    EXPECT_EQ(x, b.NextU64());
    EXPECT_NE(x, c.NextU64());
  }
}

TEST(Rng, MomentsOfUniformBelowAndNormal) {
  Rng r(7);
  const int n = 200000;
  double sum = 0, sumsq = 0, usum = 0;
  std::vector<int> counts(10, 0);
  for (int i = 0; i < n; ++i) {
    const double z = r.Normal();
    sum += z;
    sumsq += z * z;
    const double u = r.Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    usum += u;
    counts[r.Below(10)]++;
  }
  // Standard errors: mean 1/sqrt(n) ≈ 0.0022; 5 sigma bounds.
  EXPECT_NEAR(sum / n, 0.0, 0.012);
  EXPECT_NEAR(sumsq / n, 1.0, 0.02);
  EXPECT_NEAR(usum / n, 0.5, 0.004);
  for (int c : counts) EXPECT_NEAR(c, n / 10, 5 * std::sqrt(n * 0.09));
}

}  // namespace
}  // namespace dstrain
