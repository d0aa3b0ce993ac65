#include "worker/data/shuffle.h"

namespace dstrain::data {
namespace {

inline uint64_t RotateLeft(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Xoshiro256::Xoshiro256(uint64_t seed) {
  SplitMix64 sm(seed);
  // SplitMix64 is a bijection of its counter, so four consecutive outputs are never all zero (the
  // one state xoshiro cannot leave).
  for (uint64_t& s : s_) s = sm.Next();
}

uint64_t Xoshiro256::Next() {
  const uint64_t result = RotateLeft(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = RotateLeft(s_[3], 45);
  return result;
}

uint64_t UniformBelow(Xoshiro256& rng, uint64_t bound) {
  // The high 64 bits of x * bound are uniform on [0, bound) once the low half is not among the
  // (2^64 mod bound) values that would over-represent some results; those draws are rejected.
  unsigned __int128 m = static_cast<unsigned __int128>(rng.Next()) * bound;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < bound) {
    const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
    while (low < threshold) {
      m = static_cast<unsigned __int128>(rng.Next()) * bound;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

uint64_t EpochSeed(uint64_t seed, uint64_t epoch) { return SplitMix64(seed).Next() + epoch; }

}  // namespace dstrain::data
