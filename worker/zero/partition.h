// How ZeRO splits the flat parameter space across the data-parallel ranks.
//
// The layout's modules are grouped into units: runs of consecutive modules that one collective
// reduces (and, in stage 3, gathers). A unit's range of the flat layout is cut into `world` equal
// chunks of `chunk` floats (a multiple of 16, so every chunk starts 64-byte aligned; the tail of
// the last chunks is zero padding); rank r owns chunk r of every unit. A rank's partition is the
// concatenation of its chunks over all units: that is what its optimizer updates.
//
// Each unit also has a place in the "padded space", world·chunk floats starting at
// padded_offset: exactly the buffer ReduceScatter takes and AllGather fills.
//
//   flat     | embedding      | block.0 | block.1 | final |
//   units    | unit 0         | unit 1            | unit 2 |   (stage 3: one module per unit)
//   padded   |c0 |c1 |c2 |c3 |c0  |c1  |c2  |c3  |c0|c1|c2|c3|   (c_r: rank r's chunk)
//
// With world 1 the padded space is the flat layout plus at most 15 floats of padding per unit.
#pragma once

#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "worker/model/param_layout.h"

namespace dstrain::zero {

inline constexpr int64_t kChunkAlign = 16;  // floats

struct Unit {
  int first_module = 0, end_module = 0;  // modules [first_module, end_module)
  int64_t begin = 0, end = 0;            // flat range of the layout
  int64_t chunk = 0;                     // floats per rank (a multiple of kChunkAlign)
  int64_t padded_offset = 0;             // start in the padded space
  int64_t owned_offset = 0;              // start of this rank's chunk in its partition
  int64_t numel() const { return end - begin; }
};

// A flat range [flat, flat + count) of the layout and where it sits (`at`) in the padded space or
// in a rank's partition.
struct Piece {
  int64_t flat = 0, at = 0, count = 0;
};

class Partition {
 public:
  // The one rule that cuts a layout for a ZeRO stage; the engine, `dstrain estimate` and
  // checkpoint resharding all call it. Stage 0 partitions nothing (one unit, one "rank": plain
  // data parallelism keeps everything everywhere); stages 1 and 2 cut DeepSpeed's reduce buckets
  // (units of at most reduce_bucket_size floats); stage 3 makes every module its own unit,
  // gathered while it runs.
  static Partition ForStage(const model::ParamLayout& layout, int stage, int world, int rank,
                            int64_t reduce_bucket_size);

  // Groups modules in layout order; a unit takes modules while it stays within max_unit_floats
  // (a module larger than that is a unit alone; max_unit_floats <= 1: one module per unit).
  static Partition Build(const model::ParamLayout& layout, int world, int rank,
                         int64_t max_unit_floats);

  int world() const { return world_; }
  int rank() const { return rank_; }
  const std::vector<Unit>& units() const { return units_; }
  int unit_of_module(int module) const { return unit_of_module_[module]; }
  int64_t padded_total() const { return padded_total_; }
  int64_t owned_total() const { return owned_total_; }
  // Floats of unit u in the padded space (world · chunk).
  int64_t padded_numel(int u) const { return world_ * units_[u].chunk; }

  // This rank's chunk of unit u as a flat range [first, second), clamped to the unit's real
  // floats (empty when the chunk is all padding).
  std::pair<int64_t, int64_t> OwnedFlatRange(int u) const;

  // Where the flat layout sits in the padded space (one piece per unit) and which of it this
  // rank's partition holds (a piece per unit, possibly empty): the copies below, as ranges, for
  // callers that copy with device operations.
  std::vector<Piece> PaddedPieces() const;
  std::vector<Piece> OwnedPieces() const;

  // Copies between a flat layout buffer and the padded space / this rank's partition in host
  // memory. Padding is written as zeros.
  void FlatToPadded(const float* flat, float* padded) const;
  void PaddedToFlat(const float* padded, float* flat) const;
  void FlatToOwned(const float* flat, float* owned) const;
  // Unit u's padded block (world · chunk floats) into its flat range.
  void UnitToFlat(int u, const float* unit_padded, float* flat) const;

 private:
  int world_ = 1, rank_ = 0;
  std::vector<Unit> units_;
  std::vector<int> unit_of_module_;
  int64_t padded_total_ = 0, owned_total_ = 0;
};

// The optimizer update's cut of a rank's owned elements (zero_optimization.sub_group_size): one
// update covers at most `sub_group_size` of them, so its working set (what one kernel streams
// through, and what NVMe offload swaps) stays bounded. Unit by unit, or, with `one_pass` (the
// parameters and gradients are this rank's chunks back to back, as the moments are: stage 3),
// over all owned elements at once. ZeroState updates by it and `dstrain estimate` sizes the swap
// by it.
struct UpdateWindowCut {
  int64_t owned_at = 0, len = 0;
  int unit = -1;       // the unit the window lies in; -1 in one pass
  int64_t within = 0;  // its first element's offset in the unit's chunk
};
std::vector<UpdateWindowCut> CutUpdateWindows(const Partition& p, bool one_pass,
                                              int64_t sub_group_size);

// DeepSpeed's partial offload (offload_optimizer.ratio): of `windows` sub-groups the first
// int((1 - ratio) * windows) keep their state on the device; the rest are offloaded. Returns that
// first offloaded index (windows: none is).
int FirstOffloadedWindow(int windows, double ratio);

}  // namespace dstrain::zero
