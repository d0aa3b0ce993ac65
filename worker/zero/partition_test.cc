#include "worker/zero/partition.h"

#include <vector>

#include "gtest/gtest.h"
#include "worker/model/param_layout.h"

namespace dstrain::zero {
namespace {

model::ParamLayout SmallGpt() {
  // Sizes chosen so nothing divides evenly: C=24, V=37 padded to 48, 3 layers.
  auto layout = model::ParamLayout::ForGpt({3, 2, 24, 37, 48, 19});
  EXPECT_TRUE(layout.ok()) << layout.status();
  return *layout;
}

TEST(Partition, OneModulePerUnitCoversTheLayoutInOrder) {
  const model::ParamLayout layout = SmallGpt();
  const Partition p = Partition::Build(layout, 3, 1, 1);
  ASSERT_EQ(p.units().size(), layout.modules().size());
  int64_t expect_begin = 0;
  for (size_t u = 0; u < p.units().size(); ++u) {
    const Unit& unit = p.units()[u];
    EXPECT_EQ(unit.begin, expect_begin);
    EXPECT_EQ(unit.begin, layout.modules()[u].offset);
    EXPECT_EQ(p.unit_of_module(static_cast<int>(u)), static_cast<int>(u));
    EXPECT_EQ(unit.chunk % kChunkAlign, 0);
    EXPECT_GE(3 * unit.chunk, unit.numel());
    EXPECT_LT(3 * (unit.chunk - kChunkAlign), unit.numel());  // no more padding than needed
    expect_begin = unit.end;
  }
  EXPECT_EQ(expect_begin, layout.total());
}

TEST(Partition, BucketSizeGroupsConsecutiveModules) {
  const model::ParamLayout layout = SmallGpt();
  const int64_t block = layout.modules()[1].numel;
  // Room for two blocks per unit: embedding alone (it is larger), blocks in pairs, final joins.
  const Partition p = Partition::Build(layout, 2, 0, 2 * block + 64);
  for (const Unit& u : p.units()) {
    EXPECT_TRUE(u.numel() <= 2 * block + 64 || u.end_module - u.first_module == 1);
  }
  const Partition one = Partition::Build(layout, 2, 0, layout.total());
  ASSERT_EQ(one.units().size(), 1u);
  EXPECT_EQ(one.units()[0].numel(), layout.total());
}

TEST(Partition, RanksOwnDisjointChunksThatCoverEverything) {
  const model::ParamLayout layout = SmallGpt();
  for (int world : {1, 2, 3, 4, 8}) {
    std::vector<int> owner(layout.total(), -1);
    for (int r = 0; r < world; ++r) {
      const Partition p = Partition::Build(layout, world, r, 1);
      int64_t owned = 0;
      for (int u = 0; u < static_cast<int>(p.units().size()); ++u) {
        const auto [first, last] = p.OwnedFlatRange(u);
        for (int64_t i = first; i < last; ++i) {
          ASSERT_EQ(owner[i], -1) << "world " << world << " float " << i;
          owner[i] = r;
        }
        EXPECT_EQ(p.units()[u].owned_offset, owned);
        owned += p.units()[u].chunk;
      }
      EXPECT_EQ(p.owned_total(), owned);
      EXPECT_EQ(p.padded_total(), world * owned);
    }
    for (int64_t i = 0; i < layout.total(); ++i) ASSERT_NE(owner[i], -1) << i;
  }
}

TEST(Partition, CopiesRoundTripAndPadWithZeros) {
  const model::ParamLayout layout = SmallGpt();
  std::vector<float> flat(layout.total());
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = 1.f + static_cast<float>(i);
  const int world = 3;
  for (int r = 0; r < world; ++r) {
    const Partition p = Partition::Build(layout, world, r, 1000);
    std::vector<float> padded(p.padded_total(), -1.f), back(flat.size(), 0.f);
    p.FlatToPadded(flat.data(), padded.data());
    p.PaddedToFlat(padded.data(), back.data());
    EXPECT_EQ(back, flat);
    std::vector<float> owned(p.owned_total(), -1.f);
    p.FlatToOwned(flat.data(), owned.data());
    for (int u = 0; u < static_cast<int>(p.units().size()); ++u) {
      const Unit& unit = p.units()[u];
      const auto [first, last] = p.OwnedFlatRange(u);
      for (int64_t k = 0; k < unit.chunk; ++k) {
        const float want = first + k < last ? flat[first + k] : 0.f;
        ASSERT_EQ(owned[unit.owned_offset + k], want);
        // The padded space holds the same chunk at rank r's place.
        ASSERT_EQ(padded[unit.padded_offset + r * unit.chunk + k], want);
      }
    }
  }
}

}  // namespace
}  // namespace dstrain::zero
