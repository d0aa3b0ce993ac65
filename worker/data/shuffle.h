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
#include "common/random/rng.h"

namespace dstrain::data {

// The generators are the project's one fully specified RNG (common/random/rng.h): SplitMix64 for
// seeding and xoshiro256** for the stream.
using ::dstrain::SplitMix64;
using Xoshiro256 = ::dstrain::Rng;

// A uniformly distributed integer in [0, bound), bound > 0, with no modulo bias (Lemire 2019,
// "Fast Random Integer Generation in an Interval"). Deterministic for a given generator state.
inline uint64_t UniformBelow(Xoshiro256& rng, uint64_t bound) { return rng.Below(bound); }

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
