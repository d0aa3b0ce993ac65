#include "worker/data/shuffle.h"

namespace dstrain::data {

uint64_t EpochSeed(uint64_t seed, uint64_t epoch) { return SplitMix64(seed).Next() + epoch; }

}  // namespace dstrain::data
