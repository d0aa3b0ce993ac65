#include "worker/engine/checkpoint_io.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status/status_macros.h"
#include "worker/checkpoint/commit.h"
#include "worker/env/byte_source.h"
#include "worker/model/llmc_format.h"
#include "worker/zero/zero_state.h"

namespace dstrain::engine {
namespace {

std::string ShardName(int rank) { return absl::StrFormat("rank_%05d.bin", rank); }

int Rank(comm::Communicator* dp) { return dp != nullptr ? dp->rank() : 0; }
int World(comm::Communicator* dp) { return dp != nullptr ? dp->size() : 1; }

// Every rank learns whether every rank succeeded: the max over ranks of a failure flag.
absl::Status AgreeAll(comm::Communicator* dp, const comm::CommOptions& comm,
                      const absl::Status& mine, absl::string_view what) {
  if (dp == nullptr || dp->size() == 1) return mine;
  float failed = mine.ok() ? 0.f : 1.f;
  DT_ASSIGN_OR_RETURN(auto work, dp->AllReduce(comm::CommBuffer{&failed, 1, DType::kF32},
                                               comm::ReduceOp::kMax, comm));
  DT_RETURN_IF_ERROR(work->Wait());
  if (!mine.ok()) return mine;
  if (failed != 0.f) return absl::AbortedError(absl::StrCat(what, " failed on another rank"));
  return absl::OkStatus();
}

// A shard record travels through a float all-gather as raw bits (a gather copies, never adds).
constexpr int kRecordFloats = 4;  // bytes (2 x u32), crc32c, ok
void PackRecord(const checkpoint::ShardRecord& r, bool ok, float* out) {
  const uint32_t words[kRecordFloats] = {
      static_cast<uint32_t>(r.bytes), static_cast<uint32_t>(r.bytes >> 32), r.crc32c, ok ? 1u : 0u};
  std::memcpy(out, words, sizeof(words));
}
checkpoint::ShardRecord UnpackRecord(const float* in, int rank, bool* ok) {
  uint32_t words[kRecordFloats];
  std::memcpy(words, in, sizeof(words));
  *ok = words[3] == 1u;
  return checkpoint::ShardRecord{ShardName(rank), (uint64_t{words[1]} << 32) | words[0], words[2]};
}

// The per-rank state at the front of a shard: [u64 n][n bytes].
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

// The model shape as the manifest's meta records it, one field per GptConfig member: what a
// load compares (every field, since two models can share a parameter layout and still differ,
// e.g. in n_head or in vocab_size under the same padding) and what export rebuilds the model from.
struct ShapeField {
  const char* name;
  int model::GptConfig::*member;
};
constexpr ShapeField kShapeFields[] = {
    {"n_layer", &model::GptConfig::n_layer},
    {"n_head", &model::GptConfig::n_head},
    {"n_embd", &model::GptConfig::n_embd},
    {"vocab_size", &model::GptConfig::vocab_size},
    {"padded_vocab_size", &model::GptConfig::padded_vocab_size},
    {"block_size", &model::GptConfig::block_size},
};

nlohmann::json ShapeToJson(const model::GptConfig& c) {
  nlohmann::json shape = nlohmann::json::object();
  for (const ShapeField& f : kShapeFields) shape[f.name] = c.*f.member;
  return shape;
}

// The shape a checkpoint's manifest records; kDataLoss naming the manifest when a field is
// missing.
absl::StatusOr<model::GptConfig> ShapeFromManifest(const checkpoint::CheckpointReader& reader) {
  const std::string path = env::JoinPath(reader.dir(), checkpoint::kManifestName);
  const nlohmann::json& meta = reader.manifest().meta;
  const auto shape = meta.find("model");
  if (shape == meta.end() || !shape->is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": meta has no model shape"));
  }
  model::GptConfig c;
  for (const ShapeField& f : kShapeFields) {
    const auto v = shape->find(f.name);
    if (v == shape->end() || !v->is_number_integer()) {
      return absl::DataLossError(absl::StrCat(path, ": meta.model.", f.name, " missing"));
    }
    c.*f.member = v->get<int>();
  }
  return c;
}

// kFailedPrecondition naming every field in which the checkpoint's model differs from `mine`.
absl::Status CheckModelShape(const checkpoint::CheckpointReader& reader,
                             const model::GptConfig& mine) {
  DT_ASSIGN_OR_RETURN(const model::GptConfig theirs, ShapeFromManifest(reader));
  std::vector<std::string> differ;
  for (const ShapeField& f : kShapeFields) {
    if (theirs.*f.member != mine.*f.member) {
      differ.push_back(absl::StrCat("model.", f.name, ": checkpoint has ", theirs.*f.member,
                                    ", this job has ", mine.*f.member));
    }
  }
  if (differ.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "checkpoint ", reader.dir(), " holds another model: ", absl::StrJoin(differ, "; ")));
}

}  // namespace

absl::Status SaveCheckpoint(Engine& engine, comm::Communicator* dp,
                            const CheckpointOptions& options, const std::string& tag,
                            absl::string_view rank_state, nlohmann::json meta) {
  const int rank = Rank(dp), world = World(dp);
  // Phase 1: rank 0 opens the save (the tmp dir), everyone learns whether it could.
  std::unique_ptr<checkpoint::CheckpointWriter> writer;
  absl::Status status;
  if (rank == 0) {
    auto w =
        checkpoint::CheckpointWriter::Begin(options.env, options.root, tag, engine.global_steps());
    status = w.status();
    if (w.ok()) writer = std::move(*w);
  }
  DT_RETURN_IF_ERROR(AgreeAll(dp, options.comm, status, "opening the checkpoint"));

  // Phase 2: every rank writes its shard (a failure is reported in phase 3, not returned here:
  // the other ranks are waiting in the gather).
  absl::StatusOr<checkpoint::ShardRecord> record =
      [&]() -> absl::StatusOr<checkpoint::ShardRecord> {
    // Straight from the engine's buffers to the file: no copy of the state.
    std::string head;
    DT_ASSIGN_OR_RETURN(std::vector<absl::string_view> state, engine.SaveStatePieces(&head));
    const uint64_t n = rank_state.size();
    std::vector<absl::string_view> pieces = {
        absl::string_view(reinterpret_cast<const char*>(&n), sizeof(n)), rank_state};
    pieces.insert(pieces.end(), state.begin(), state.end());
    return checkpoint::WriteShardFile(options.env, checkpoint::CheckpointTmpDir(options.root, tag),
                                      ShardName(rank), pieces);
  }();

  // Phase 3: rank 0 gathers the records and commits.
  std::vector<float> records(kRecordFloats * world);
  PackRecord(record.ok() ? *record : checkpoint::ShardRecord{}, record.ok(),
             records.data() + kRecordFloats * rank);
  if (dp != nullptr && world > 1) {
    DT_ASSIGN_OR_RETURN(
        auto work,
        dp->AllGather(
            comm::CommBuffer{records.data() + kRecordFloats * rank, kRecordFloats, DType::kF32},
            comm::CommBuffer{records.data(), kRecordFloats * world, DType::kF32}, options.comm));
    DT_RETURN_IF_ERROR(work->Wait());
  }
  status = record.status();
  if (rank == 0 && status.ok()) {
    for (int r = 0; r < world && status.ok(); ++r) {
      bool ok = false;
      checkpoint::ShardRecord rec = UnpackRecord(records.data() + kRecordFloats * r, r, &ok);
      status = ok ? writer->AddShard(std::move(rec))
                  : absl::AbortedError(absl::StrCat("rank ", r, " could not write its shard"));
    }
    if (status.ok()) {
      meta["world_size"] = world;
      meta["zero_stage"] = engine.spec().zero.stage;
      meta["precision"] = std::string(config::PrecisionName(engine.spec()));
      meta["step"] = engine.global_steps();
      meta["reduce_bucket_size"] = engine.spec().zero.reduce_bucket_size;
      meta["model"] = ShapeToJson(engine.model().config());
      status = writer->Commit(meta);
    }
    if (status.ok() && options.keep_last > 0) {
      status = checkpoint::KeepLast(options.env, options.root, options.keep_last);
    }
  }
  return AgreeAll(dp, options.comm, status, absl::StrCat("saving checkpoint ", tag));
}

absl::StatusOr<std::string> LoadCheckpoint(Engine& engine, comm::Communicator* dp,
                                           const CheckpointOptions& options,
                                           absl::string_view tag) {
  const int rank = Rank(dp), world = World(dp);
  // Phase 1: every rank opens the checkpoint and learns whether it can load its own shard (the
  // checkpoint has this run's world size, stage and precision) or must reshard.
  std::unique_ptr<checkpoint::CheckpointReader> reader;
  bool reshard = false, same_precision = true;
  int64_t bucket = 0;
  absl::Status status = [&]() -> absl::Status {
    DT_ASSIGN_OR_RETURN(reader, checkpoint::CheckpointReader::Open(options.env, options.root, tag));
    const nlohmann::json& meta = reader->manifest().meta;
    DT_RETURN_IF_ERROR(CheckModelShape(*reader, engine.model().config()));
    const int old_world = meta.value("world_size", 0);
    if (old_world <= 0) return absl::DataLossError(absl::StrCat(reader->dir(), ": no world size"));
    same_precision =
        meta.value("precision", std::string()) == std::string(config::PrecisionName(engine.spec()));
    reshard = old_world != world || meta.value("zero_stage", -1) != engine.spec().zero.stage ||
              !same_precision;
    bucket = meta.value("reduce_bucket_size", int64_t{0});
    return absl::OkStatus();
  }();
  DT_RETURN_IF_ERROR(AgreeAll(dp, options.comm, status, "opening the checkpoint"));

  // Phase 2: read and restore, not collective; all ranks agree on the outcome before the
  // collective part (stages 1-2 gather parameters again). A shard is
  // [u64 n][n bytes of per-rank state][engine state].
  std::string rank_state;
  status = [&]() -> absl::Status {
    if (reshard) {
      // Every shard, reassembled whole. The data position is global (all ranks consume one
      // stream of global batches): rank 0's serves every new rank.
      std::vector<std::string> shards;
      std::vector<absl::string_view> states;
      for (int r = 0; r < reader->manifest().meta.value("world_size", 0); ++r) {
        DT_ASSIGN_OR_RETURN(std::string shard, reader->ReadShard(ShardName(r)));
        shards.push_back(std::move(shard));
      }
      for (const std::string& shard : shards) {
        env::StringSource source(shard);
        DT_ASSIGN_OR_RETURN(std::string mine, ReadRankState(source));
        if (states.empty()) rank_state = std::move(mine);
        states.push_back(absl::string_view(shard).substr(shard.size() - source.remaining()));
      }
      return engine.LoadReshardedState(states, bucket, same_precision);
    }
    // This rank's own shard, read straight into the engine's buffers; the checksum is checked
    // before anyone trains on it.
    DT_ASSIGN_OR_RETURN(std::unique_ptr<checkpoint::ShardReader> shard,
                        reader->OpenShard(ShardName(rank)));
    absl::StatusOr<std::string> mine = ReadRankState(*shard);
    absl::Status restored = mine.ok() ? engine.LoadState(*shard) : mine.status();
    // A damaged file explains any failure above best: the checksum is checked either way.
    DT_RETURN_IF_ERROR(shard->Finish());
    if (!restored.ok()) {
      return absl::Status(restored.code(), absl::StrCat(shard->path(), ": ", restored.message()));
    }
    rank_state = *std::move(mine);
    return absl::OkStatus();
  }();
  DT_RETURN_IF_ERROR(AgreeAll(dp, options.comm, status, "loading the checkpoint"));
  if (!reshard) DT_RETURN_IF_ERROR(engine.FinishLoad());
  return rank_state;
}

absl::Status ExportCheckpoint(env::Env* env, const std::string& root, absl::string_view tag,
                              const std::string& out_path) {
  DT_ASSIGN_OR_RETURN(auto reader, checkpoint::CheckpointReader::Open(env, root, tag));
  const nlohmann::json& meta = reader->manifest().meta;
  DT_ASSIGN_OR_RETURN(const model::GptConfig config, ShapeFromManifest(*reader));
  DT_ASSIGN_OR_RETURN(model::ParamLayout layout, model::ParamLayout::ForGpt(config));
  const int world = meta.value("world_size", 0);
  const int64_t bucket = meta.value("reduce_bucket_size", int64_t{0});
  const int64_t total = layout.total();
  std::vector<float> weights(total, 0.f), m1(total, 0.f), v1(total, 0.f);
  for (int r = 0; r < world; ++r) {
    DT_ASSIGN_OR_RETURN(std::string shard, reader->ReadShard(ShardName(r)));
    // [u64 n][per-rank state][u64 k][counters][ZeroState shard]: skip the two prefixed parts.
    env::StringSource source(shard);
    DT_RETURN_IF_ERROR(ReadRankState(source).status());
    DT_RETURN_IF_ERROR(ReadRankState(source).status());
    const absl::string_view rest =
        absl::string_view(shard).substr(shard.size() - source.remaining());
    DT_RETURN_IF_ERROR(
        zero::ZeroState::ShardToFlat(layout, rest, bucket, weights.data(), m1.data(), v1.data()));
  }
  return model::WriteLlmcModel(out_path, config, layout, weights.data());
}

}  // namespace dstrain::engine
