// Internal to checkpoint_io: reading a committed checkpoint into another layout, world size, ZeRO
// stage, precision or pipeline grid, range by range (docs/checkpoints.md, "Resharding").
//
// A checkpoint's shards are numbered by the saving job's rank: with pipeline parallelism that is
// the grid's rank, stage s's data rank d being shard s·D + d (pipe outermost, as worker/pipe's
// Topology), and each shard holds its stage's layout (ParamLayout::ForGpt over the stage's
// blocks) partitioned over the stage's D data ranks. The manifest's meta.pipeline records the
// stages' blocks; without it the checkpoint is one stage holding the whole model.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/checkpoint/commit.h"
#include "worker/env/byte_source.h"
#include "worker/model/param_layout.h"
#include "worker/zero/partition.h"

namespace dstrain::engine::internal {

// "rank_00001.bin": the shard of the saving job's rank 1.
std::string ShardName(int rank);

// The per-rank state at the front of a shard: [u64 n][n bytes].
absl::StatusOr<std::string> ReadRankState(env::ByteSource& shard);

// meta.pipeline as a save writes it: {"stages": S, "blocks": [[first, end], ...]}; null for a
// run without pipeline (one stage).
nlohmann::json PipelineToJson(const std::vector<model::BlockRange>& stages, int n_layer);

// The saving run's grid as its manifest records it.
struct SavedGrid {
  int world = 0;       // shards
  int data_world = 0;  // data-parallel ranks per stage: world / stages
  int zero_stage = 0;
  int64_t reduce_bucket_size = 0;
  std::vector<model::BlockRange> blocks;    // per stage; one stage: the whole model
  std::vector<model::ParamLayout> layouts;  // per stage
};
// kDataLoss naming the manifest for a missing or inconsistent world size, ZeRO stage or grid.
absl::StatusOr<SavedGrid> ReadSavedGrid(const checkpoint::CheckpointReader& reader,
                                        const model::GptConfig& shape);
// The same for a checkpoint of one stage holding `layout` (a user module's: no pipeline).
absl::StatusOr<SavedGrid> ReadSavedGrid(const checkpoint::CheckpointReader& reader,
                                        model::ParamLayout layout);

// What a resharding read returns besides the floats it stores: the saving rank 0's per-rank
// state and step counters (the data position is global, all ranks consuming one stream of global
// batches, so rank 0's serves every new rank).
struct ReshardPrefix {
  std::string rank_state;
  nlohmann::json counters;
};

// Receives floats [flat, flat + count) of array `array` (0 weights, 1 m, 2 v) of the reader's
// layout: reads exactly count floats from `source`.
using StoreRange =
    std::function<absl::Status(int array, int64_t flat, int64_t count, env::ByteSource& source)>;

// Reads, from checkpoint `reader` (its grid `saved`), the floats of arrays [0, arrays) that fall
// in `want` (flat ranges of layout `mine`, sorted, disjoint), handing every run to `store` in
// `mine`'s coordinates. A parameter is found by name in the first saved stage holding it (the
// tied embedding's copies are equal); where a saved stage's layout is `mine`, ranges map one to
// one, padding included. Only what is wanted is read, with a ranged ShardReader that seeks past
// the rest, except in the shards `verify(shard)` selects: those are streamed whole through their
// checksum (bounded memory), and their checksum decides. A shard from which nothing is wanted and
// that is not verified is not opened (shard 0's always is: it holds the prefix). kDataLoss when a
// shard disagrees with the manifest or the shards lack wanted floats.
absl::StatusOr<ReshardPrefix> ReadResharded(const checkpoint::CheckpointReader& reader,
                                            const SavedGrid& saved, const model::ParamLayout& mine,
                                            const std::vector<zero::Piece>& want, int arrays,
                                            const std::function<bool(int)>& verify,
                                            const StoreRange& store);

}  // namespace dstrain::engine::internal
