#include "worker/zero/partition.h"

#include <algorithm>
#include <cstring>

namespace dstrain::zero {

Partition Partition::ForStage(const model::ParamLayout& layout, int stage, int world, int rank,
                              int64_t reduce_bucket_size) {
  if (stage == 0) return Build(layout, 1, 0, std::numeric_limits<int64_t>::max());
  if (stage <= 2) return Build(layout, world, rank, reduce_bucket_size);
  return Build(layout, world, rank, /*max_unit_floats=*/1);
}

Partition Partition::Build(const model::ParamLayout& layout, int world, int rank,
                           int64_t max_unit_floats) {
  Partition p;
  p.world_ = world;
  p.rank_ = rank;
  const auto& modules = layout.modules();
  p.unit_of_module_.resize(modules.size());
  for (int m = 0; m < static_cast<int>(modules.size()); ++m) {
    // A module's flat range ends where the next begins (padding between parameters included).
    const int64_t m_end =
        m + 1 < static_cast<int>(modules.size()) ? modules[m + 1].offset : layout.total();
    const bool open = !p.units_.empty() && p.units_.back().end_module == m;
    if (open && m_end - p.units_.back().begin <= max_unit_floats) {
      p.units_.back().end_module = m + 1;
      p.units_.back().end = m_end;
    } else {
      Unit u;
      u.first_module = m;
      u.end_module = m + 1;
      u.begin = modules[m].offset;
      u.end = m_end;
      p.units_.push_back(u);
    }
    p.unit_of_module_[m] = static_cast<int>(p.units_.size()) - 1;
  }
  for (Unit& u : p.units_) {
    const int64_t per_rank = (u.numel() + world - 1) / world;
    u.chunk = (per_rank + kChunkAlign - 1) / kChunkAlign * kChunkAlign;
    u.padded_offset = p.padded_total_;
    u.owned_offset = p.owned_total_;
    p.padded_total_ += world * u.chunk;
    p.owned_total_ += u.chunk;
  }
  return p;
}

std::pair<int64_t, int64_t> Partition::OwnedFlatRange(int u) const {
  const Unit& unit = units_[u];
  const int64_t first = std::min(unit.end, unit.begin + rank_ * unit.chunk);
  const int64_t last = std::min(unit.end, first + unit.chunk);
  return {first, last};
}

std::vector<Piece> Partition::PaddedPieces() const {
  std::vector<Piece> pieces;
  for (const Unit& u : units_) pieces.push_back({u.begin, u.padded_offset, u.numel()});
  return pieces;
}

std::vector<Piece> Partition::OwnedPieces() const {
  std::vector<Piece> pieces;
  for (int i = 0; i < static_cast<int>(units_.size()); ++i) {
    const auto [first, last] = OwnedFlatRange(i);
    pieces.push_back({first, units_[i].owned_offset, last - first});
  }
  return pieces;
}

void Partition::FlatToPadded(const float* flat, float* padded) const {
  for (const Unit& u : units_) {
    float* dst = padded + u.padded_offset;
    std::memcpy(dst, flat + u.begin, u.numel() * sizeof(float));
    std::fill(dst + u.numel(), dst + world_ * u.chunk, 0.f);
  }
}

void Partition::PaddedToFlat(const float* padded, float* flat) const {
  for (const Unit& u : units_) {
    std::memcpy(flat + u.begin, padded + u.padded_offset, u.numel() * sizeof(float));
  }
}

void Partition::FlatToOwned(const float* flat, float* owned) const {
  for (int i = 0; i < static_cast<int>(units_.size()); ++i) {
    const auto [first, last] = OwnedFlatRange(i);
    float* dst = owned + units_[i].owned_offset;
    std::memcpy(dst, flat + first, (last - first) * sizeof(float));
    std::fill(dst + (last - first), dst + units_[i].chunk, 0.f);
  }
}

void Partition::UnitToFlat(int u, const float* unit_padded, float* flat) const {
  std::memcpy(flat + units_[u].begin, unit_padded, units_[u].numel() * sizeof(float));
}

std::vector<UpdateWindowCut> CutUpdateWindows(const Partition& p, bool one_pass,
                                              int64_t sub_group_size) {
  const int64_t group = std::max<int64_t>(1, sub_group_size);
  std::vector<UpdateWindowCut> out;
  auto cut = [&](int unit, int64_t owned_at, int64_t n) {
    for (int64_t at = 0; at < n; at += group) {
      out.push_back({owned_at + at, std::min(group, n - at), unit, at});
    }
  };
  if (one_pass) {
    cut(-1, 0, p.owned_total());
    return out;
  }
  for (int u = 0; u < static_cast<int>(p.units().size()); ++u) {
    cut(u, p.units()[u].owned_offset, p.units()[u].chunk);
  }
  return out;
}

int FirstOffloadedWindow(int windows, double ratio) {
  return std::clamp(static_cast<int>((1.0 - ratio) * windows), 0, windows);
}

}  // namespace dstrain::zero
