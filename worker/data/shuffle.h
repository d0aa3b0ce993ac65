// Deterministic pseudo-random numbers and shuffling for the data pipeline.
//
// Every rank of a data-parallel job must compute the same permutation of training windows from the
// same seed, on every machine and with every standard library, and a resumed run must recompute
// the permutation an interrupted run used. std::mt19937 itself is portable, but the distributions
// (std::uniform_int_distribution, std::shuffle) are implementation-defined and differ between
// libstdc++ and libc++ and across versions. So this file fixes every step: SplitMix64 for seeding,
// xoshiro256** (Blackman & Vigna) for the stream, Lemire's unbiased multiply-and-reject for bounded
// integers, and the textbook Fisher-Yates walk from the top. Changing any of them changes which
// data a run sees; the golden values in shuffle_test.cc are there to catch that.
//
// Thread-safety: the generators are plain values with no shared state; use one per thread.
#pragma once

#include <cstdint>
#include <utility>

#include "absl/types/span.h"

namespace dstrain::data {

// SplitMix64 (Steele, Lea & Flood; Vigna's reference code). Used to expand a 64-bit seed into
// generator state, because xoshiro must not start from a state with few bits set.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

// xoshiro256** 1.0: fast, 256 bits of state, passes BigCrush; the state is seeded from SplitMix64
// as its authors recommend.
class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed);
  uint64_t Next();

 private:
  uint64_t s_[4];
};

// A uniformly distributed integer in [0, bound), bound > 0, with no modulo bias (Lemire 2019,
// "Fast Random Integer Generation in an Interval"). Deterministic for a given generator state.
uint64_t UniformBelow(Xoshiro256& rng, uint64_t bound);

// Shuffles `values` in place: for i = n-1 down to 1, swap values[i] with values[UniformBelow(i+1)].
template <typename T>
void FisherYatesShuffle(Xoshiro256& rng, absl::Span<T> values) {
  for (size_t i = values.size(); i > 1; --i) {
    const uint64_t j = UniformBelow(rng, i);
    std::swap(values[i - 1], values[j]);
  }
}

// The seed of the generator for one epoch of a run seeded with `seed`. Not `seed + epoch`: that
// would give run seed 1 the same epoch-0 order as run seed 0's epoch 1. Mixing the seed first
// makes such collisions need two 64-bit hashes that differ by less than the epoch count.
uint64_t EpochSeed(uint64_t seed, uint64_t epoch);

}  // namespace dstrain::data
