#include "worker/data/shuffle.h"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::data {
namespace {

using ::testing::ElementsAre;

// Published test vector of SplitMix64 (seed 1234567).
TEST(SplitMix64, MatchesReferenceVector) {
  SplitMix64 sm(1234567);
  EXPECT_EQ(sm.Next(), 6457827717110365317ull);
  EXPECT_EQ(sm.Next(), 3203168211198807973ull);
  EXPECT_EQ(sm.Next(), 9817491932198370423ull);
}

// Golden values (computed by an independent Python transcription of the reference C). If these
// change, every shuffled run changes the data it sees and old checkpoints resume onto other data.
TEST(Xoshiro256, GoldenValues) {
  Xoshiro256 rng(42);
  EXPECT_EQ(rng.NextU64(), 1546998764402558742ull);
  EXPECT_EQ(rng.NextU64(), 6990951692964543102ull);
  EXPECT_EQ(rng.NextU64(), 12544586762248559009ull);
}

TEST(UniformBelow, GoldenValues) {
  Xoshiro256 rng(7);
  std::vector<uint64_t> v;
  for (int i = 0; i < 10; ++i) v.push_back(UniformBelow(rng, 10));
  EXPECT_THAT(v, ElementsAre(7, 2, 8, 9, 9, 8, 0, 1, 4, 1));
}

TEST(UniformBelow, StaysInRangeAndCoversIt) {
  Xoshiro256 rng(1);
  for (uint64_t bound : {uint64_t{1}, uint64_t{2}, uint64_t{3}, uint64_t{1000},
                         uint64_t{0x8000000000000001ull}, ~uint64_t{0}}) {
    for (int i = 0; i < 1000; ++i) ASSERT_LT(UniformBelow(rng, bound), bound);
  }
  std::vector<int> counts(6, 0);
  for (int i = 0; i < 60000; ++i) ++counts[UniformBelow(rng, 6)];
  for (int c : counts) {
    EXPECT_GT(c, 9400);  // expectation 10000, sd ~91
    EXPECT_LT(c, 10600);
  }
}

TEST(FisherYatesShuffle, GoldenPermutation) {
  Xoshiro256 rng(EpochSeed(1337, 0));
  std::vector<int> v(10);
  std::iota(v.begin(), v.end(), 0);
  FisherYatesShuffle(rng, absl::MakeSpan(v));
  EXPECT_THAT(v, ElementsAre(6, 3, 1, 7, 9, 8, 4, 0, 5, 2));
}

TEST(FisherYatesShuffle, IsAPermutationAndDependsOnSeed) {
  std::vector<int> a(1000), b(1000);
  std::iota(a.begin(), a.end(), 0);
  std::iota(b.begin(), b.end(), 0);
  Xoshiro256 ra(EpochSeed(5, 0)), rb(EpochSeed(5, 1));
  FisherYatesShuffle(ra, absl::MakeSpan(a));
  FisherYatesShuffle(rb, absl::MakeSpan(b));
  EXPECT_NE(a, b);
  std::vector<int> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
}

TEST(EpochSeed, SeedAndEpochDoNotAlias) {
  // seed + epoch would make these equal.
  EXPECT_NE(EpochSeed(1, 0), EpochSeed(0, 1));
  EXPECT_NE(EpochSeed(0, 0), EpochSeed(0, 1));
}

}  // namespace
}  // namespace dstrain::data
