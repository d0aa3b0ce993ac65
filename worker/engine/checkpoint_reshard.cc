#include "worker/engine/checkpoint_reshard.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_macros.h"
#include "worker/engine/engine.h"
#include "worker/env/env.h"
#include "worker/zero/zero_state.h"

namespace dstrain::engine::internal {
namespace {

// Floats [flat, flat + count) of a saved stage's layout, destined for `to` in the reader's.
struct Run {
  int64_t flat = 0, count = 0, to = 0;
};

bool SameLayout(const model::ParamLayout& a, const model::ParamLayout& b) {
  if (a.total() != b.total() || a.params().size() != b.params().size()) return false;
  for (size_t i = 0; i < a.params().size(); ++i) {
    if (a.params()[i].name != b.params()[i].name || a.params()[i].offset != b.params()[i].offset) {
      return false;
    }
  }
  return true;
}

// The runs of saved layout `from` that hold what `want` (ranges of `mine`) wants of the
// parameters not yet `taken` (per parameter of `mine`; those found here are marked), sorted.
std::vector<Run> MapRuns(const model::ParamLayout& mine, const std::vector<zero::Piece>& want,
                         const model::ParamLayout& from, std::vector<bool>& taken) {
  std::vector<Run> runs;
  if (SameLayout(mine, from) && std::find(taken.begin(), taken.end(), true) == taken.end()) {
    // One to one, padding included (it is zero in both).
    for (const zero::Piece& w : want) runs.push_back({w.flat, w.count, w.flat});
    std::fill(taken.begin(), taken.end(), true);
    return runs;
  }
  for (size_t i = 0; i < mine.params().size(); ++i) {
    const model::ParamSpec& p = mine.params()[i];
    const model::ParamSpec* q = taken[i] ? nullptr : from.Find(p.name);
    if (q == nullptr) continue;
    taken[i] = true;
    for (const zero::Piece& w : want) {
      const int64_t lo = std::max(w.flat, p.offset);
      const int64_t hi = std::min(w.flat + w.count, p.offset + p.numel);
      if (lo < hi) runs.push_back({q->offset + (lo - p.offset), hi - lo, lo});
    }
  }
  std::sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) { return a.flat < b.flat; });
  return runs;
}

// Reads one saved stage's shards [first_shard, first_shard + saved.data_world): the floats of
// `runs` (that stage's layout, sorted, disjoint), and shard 0's prefix.
absl::Status ReadStage(const checkpoint::CheckpointReader& reader, const SavedGrid& saved,
                       int stage, const std::vector<Run>& runs, int arrays,
                       const std::function<bool(int)>& verify, const StoreRange& store,
                       ReshardPrefix& prefix, std::vector<int64_t>& stored) {
  const model::ParamLayout& layout = saved.layouts[stage];
  // The runs that meet [begin, end), as sub-ranges, in order.
  const auto overlaps = [&runs](int64_t begin, int64_t end, const auto& fn) -> absl::Status {
    auto r = std::upper_bound(runs.begin(), runs.end(), begin,
                              [](int64_t f, const Run& x) { return f < x.flat + x.count; });
    for (; r != runs.end() && r->flat < end; ++r) {
      const int64_t lo = std::max(begin, r->flat), hi = std::min(end, r->flat + r->count);
      if (lo < hi) DT_RETURN_IF_ERROR(fn(lo, hi, *r));
    }
    return absl::OkStatus();
  };
  for (int d = 0; d < saved.data_world; ++d) {
    const int index = stage * saved.data_world + d;
    // A stage-0 checkpoint holds a stage's whole state in each of its shards (one partition of
    // one "rank"): data rank 0's serves all, the others are only verified.
    bool needed = false;
    if (saved.zero_stage > 0 || d == 0) {
      const zero::Partition expected = zero::Partition::ForStage(
          layout, saved.zero_stage, saved.data_world, d, saved.reduce_bucket_size);
      for (const zero::Piece& p : expected.OwnedPieces()) {
        DT_RETURN_IF_ERROR(overlaps(p.flat, p.flat + p.count, [&](int64_t, int64_t, const Run&) {
          needed = true;
          return absl::OkStatus();
        }));
      }
    }
    const bool verifying = verify(index);
    if (index != 0 && !needed && !verifying) continue;
    DT_ASSIGN_OR_RETURN(
        std::unique_ptr<checkpoint::ShardReader> shard,
        verifying ? reader.OpenShard(ShardName(index)) : reader.OpenShardRanges(ShardName(index)));
    const absl::Status read = [&]() -> absl::Status {
      // [u64 n][per-rank state][u64 k][counters][ZeroState header][weights][m][v]
      if (index == 0) {
        DT_ASSIGN_OR_RETURN(prefix.rank_state, ReadRankState(*shard));
        DT_ASSIGN_OR_RETURN(prefix.counters, Engine::ReadCounters(*shard));
      } else {
        for (int part = 0; part < 2; ++part) {
          uint64_t n = 0;
          DT_RETURN_IF_ERROR(shard->Read(&n, sizeof(n)));
          DT_RETURN_IF_ERROR(shard->Skip(n));
        }
      }
      DT_ASSIGN_OR_RETURN(
          const zero::ZeroState::ShardLayout header,
          zero::ZeroState::ReadShardHeader(layout, *shard, saved.reduce_bucket_size));
      const zero::Partition& p = header.partition;
      if (header.stage != saved.zero_stage ||
          (saved.zero_stage > 0 && (p.world() != saved.data_world || p.rank() != d))) {
        return absl::DataLossError(absl::StrCat("holds rank ", p.rank(), " of ", p.world(),
                                                " at stage ", header.stage, "; the manifest says ",
                                                "rank ", d, " of ", saved.data_world, " at stage ",
                                                saved.zero_stage));
      }
      if (!needed) return absl::OkStatus();
      const uint64_t arrays_at = shard->offset();
      const int64_t n = p.owned_total();
      for (int a = 0; a < arrays; ++a) {
        for (const zero::Piece& piece : p.OwnedPieces()) {
          DT_RETURN_IF_ERROR(overlaps(
              piece.flat, piece.flat + piece.count, [&](int64_t lo, int64_t hi, const Run& run) {
                const uint64_t at =
                    arrays_at + 4 * static_cast<uint64_t>(a * n + piece.at + (lo - piece.flat));
                DT_RETURN_IF_ERROR(shard->Skip(at - shard->offset()));
                DT_RETURN_IF_ERROR(store(a, run.to + (lo - run.flat), hi - lo, *shard));
                if (shard->offset() != at + 4 * static_cast<uint64_t>(hi - lo)) {
                  return absl::InternalError("a resharding store read the wrong number of bytes");
                }
                stored[a] += hi - lo;
                return absl::OkStatus();
              }));
        }
      }
      return absl::OkStatus();
    }();
    // A damaged file explains any failure above best: the checksum is checked either way.
    if (verifying) DT_RETURN_IF_ERROR(shard->Finish());
    if (!read.ok()) {
      if (absl::StrContains(read.message(), shard->path())) return read;
      return absl::Status(read.code(), absl::StrCat(shard->path(), ": ", read.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string ShardName(int rank) { return absl::StrFormat("rank_%05d.bin", rank); }

absl::StatusOr<std::string> ReadRankState(env::ByteSource& shard) {
  uint64_t n = 0;
  DT_RETURN_IF_ERROR(shard.Read(&n, sizeof(n)));
  if (n > shard.remaining()) {
    return absl::DataLossError(absl::StrCat("checkpoint shard: per-rank state of ", n, " bytes, ",
                                            shard.remaining(), " left"));
  }
  std::string state(n, '\0');
  DT_RETURN_IF_ERROR(shard.Read(state.data(), n));
  return state;
}

nlohmann::json PipelineToJson(const std::vector<model::BlockRange>& stages, int n_layer) {
  if (stages.size() <= 1) return nullptr;
  nlohmann::json blocks = nlohmann::json::array();
  for (const model::BlockRange& r : stages) blocks.push_back({r.first, r.End(n_layer)});
  return {{"stages", stages.size()}, {"blocks", blocks}};
}

namespace {

// The world size, ZeRO stage and bucket size meta records.
absl::StatusOr<SavedGrid> ReadGridHead(const checkpoint::CheckpointReader& reader) {
  const nlohmann::json& meta = reader.manifest().meta;
  const std::string path = env::JoinPath(reader.dir(), checkpoint::kManifestName);
  SavedGrid g;
  g.world = meta.value("world_size", 0);
  g.zero_stage = meta.value("zero_stage", -1);
  g.reduce_bucket_size = meta.value("reduce_bucket_size", int64_t{0});
  if (g.world <= 0 || g.zero_stage < 0 || g.zero_stage > 3) {
    return absl::DataLossError(absl::StrCat(path, ": meta lacks a valid world_size or zero_stage (",
                                            g.world, ", ", g.zero_stage, ")"));
  }
  return g;
}

}  // namespace

absl::StatusOr<SavedGrid> ReadSavedGrid(const checkpoint::CheckpointReader& reader,
                                        model::ParamLayout layout) {
  DT_ASSIGN_OR_RETURN(SavedGrid g, ReadGridHead(reader));
  const nlohmann::json& meta = reader.manifest().meta;
  if (const auto p = meta.find("pipeline"); p != meta.end() && !p->is_null()) {
    return absl::DataLossError(
        absl::StrCat(env::JoinPath(reader.dir(), checkpoint::kManifestName),
                     ": meta.pipeline in a checkpoint of a module (which has no pipeline)"));
  }
  g.blocks = {model::BlockRange{}};
  g.data_world = g.world;
  g.layouts.push_back(std::move(layout));
  return g;
}

absl::StatusOr<SavedGrid> ReadSavedGrid(const checkpoint::CheckpointReader& reader,
                                        const model::GptConfig& shape) {
  const nlohmann::json& meta = reader.manifest().meta;
  const std::string path = env::JoinPath(reader.dir(), checkpoint::kManifestName);
  DT_ASSIGN_OR_RETURN(SavedGrid g, ReadGridHead(reader));
  const auto pipeline = meta.find("pipeline");
  if (pipeline == meta.end() || pipeline->is_null()) {
    g.blocks = {model::BlockRange{}};
  } else {
    // Blocks [first, end) per stage, in order, covering every block once.
    const nlohmann::json* blocks =
        pipeline->is_object() && pipeline->contains("blocks") ? &(*pipeline)["blocks"] : nullptr;
    int next = 0;
    bool ok = blocks != nullptr && blocks->is_array() && !blocks->empty() &&
              g.world % static_cast<int>(blocks->size()) == 0;
    for (size_t s = 0; ok && s < blocks->size(); ++s) {
      const nlohmann::json& b = (*blocks)[s];
      ok = b.is_array() && b.size() == 2 && b[0].is_number_integer() && b[1].is_number_integer() &&
           b[0].get<int>() == next && b[1].get<int>() > next && b[1].get<int>() <= shape.n_layer;
      if (ok) {
        g.blocks.push_back({next, b[1].get<int>()});
        next = b[1].get<int>();
      }
    }
    if (!ok || next != shape.n_layer) {
      return absl::DataLossError(absl::StrCat(path, ": meta.pipeline is not a partition of the ",
                                              shape.n_layer, " blocks over a divisor of ", g.world,
                                              " stages: ", pipeline->dump()));
    }
  }
  g.data_world = g.world / static_cast<int>(g.blocks.size());
  for (const model::BlockRange& r : g.blocks) {
    DT_ASSIGN_OR_RETURN(model::ParamLayout layout, model::ParamLayout::ForGpt(shape, r));
    g.layouts.push_back(std::move(layout));
  }
  return g;
}

absl::StatusOr<ReshardPrefix> ReadResharded(const checkpoint::CheckpointReader& reader,
                                            const SavedGrid& saved, const model::ParamLayout& mine,
                                            const std::vector<zero::Piece>& want, int arrays,
                                            const std::function<bool(int)>& verify,
                                            const StoreRange& store) {
  std::vector<bool> taken(mine.params().size(), false);
  std::vector<int64_t> stored(arrays, 0);
  int64_t wanted = 0;
  ReshardPrefix prefix;
  for (int s = 0; s < static_cast<int>(saved.layouts.size()); ++s) {
    const std::vector<Run> runs = MapRuns(mine, want, saved.layouts[s], taken);
    for (const Run& r : runs) wanted += r.count;
    DT_RETURN_IF_ERROR(ReadStage(reader, saved, s, runs, arrays, verify, store, prefix, stored));
  }
  for (size_t i = 0; i < taken.size(); ++i) {
    if (!taken[i]) {
      return absl::DataLossError(
          absl::StrCat("checkpoint ", reader.dir(), " holds no parameter ", mine.params()[i].name));
    }
  }
  for (int a = 0; a < arrays; ++a) {
    if (stored[a] != wanted) {
      return absl::DataLossError(absl::StrCat("checkpoint ", reader.dir(), ": its shards hold ",
                                              stored[a], " of the ", wanted,
                                              " floats wanted of array ", a));
    }
  }
  return prefix;
}

}  // namespace dstrain::engine::internal
