#include "worker/engine/checkpoint_io.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status/status_macros.h"
#include "worker/checkpoint/commit.h"
#include "worker/engine/checkpoint_model.h"
#include "worker/engine/checkpoint_reshard.h"
#include "worker/env/byte_source.h"
#include "worker/model/gpt_sizes.h"
#include "worker/model/llmc_format.h"
#include "worker/model/safetensors.h"
#include "worker/zero/zero_state.h"

namespace dstrain::engine {
namespace {

using internal::ReadRankState;
using internal::ShardName;

// The consolidated model a save writes under gather_16bit_weights_on_model_save: the GPT's in
// llm.c's format, any other model's as safetensors.
constexpr absl::string_view kModelFileName = "model.bin";
constexpr absl::string_view kModuleModelFileName = "model.safetensors";

int Rank(comm::Communicator* dp) { return dp != nullptr ? dp->rank() : 0; }
int World(comm::Communicator* dp) { return dp != nullptr ? dp->size() : 1; }

// Every rank learns whether every rank succeeded: the max over ranks of a failure flag.
absl::Status AgreeAll(comm::Communicator* dp, device::Ops& ops, const comm::CommOptions& comm,
                      const absl::Status& mine, absl::string_view what) {
  if (dp == nullptr || dp->size() == 1) return mine;
  float failed = mine.ok() ? 0.f : 1.f;
  tensor::Tensor staging;  // where the group needs device buffers
  DT_RETURN_IF_ERROR(
      zero::AllReduceHostFloats(*dp, ops, &staging, &failed, 1, comm::ReduceOp::kMax, comm));
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

// Every rank learns every rank's outcome: an all-gather of (status code, the message's first
// kMessageBytes bytes). A rank that failed returns its own error; the others return the first
// failed rank's, code and message, so a damaged shard that one rank found is kDataLoss naming the
// file on every rank.
constexpr size_t kMessageBytes = 504;
constexpr int kOutcomeFloats = (8 + kMessageBytes) / 4;  // code (u32), length (u32), message
absl::Status AgreeAllShared(comm::Communicator* dp, device::Ops& ops, const comm::CommOptions& comm,
                            const absl::Status& mine, absl::string_view what) {
  if (dp == nullptr || dp->size() == 1) return mine;
  const int world = dp->size(), rank = dp->rank();
  std::vector<float> outcomes(static_cast<size_t>(kOutcomeFloats) * world, 0.f);
  {
    char packed[kOutcomeFloats * 4] = {};
    const uint32_t code = static_cast<uint32_t>(mine.code());
    const absl::string_view message = mine.message().substr(0, kMessageBytes);
    const uint32_t length = static_cast<uint32_t>(message.size());
    std::memcpy(packed, &code, 4);
    std::memcpy(packed + 4, &length, 4);
    message.copy(packed + 8, message.size());  // (memcpy's source may not be null, even empty)
    std::memcpy(outcomes.data() + kOutcomeFloats * rank, packed, sizeof(packed));
  }
  DT_RETURN_IF_ERROR(zero::AllGatherHostFloats(*dp, ops, outcomes.data(), kOutcomeFloats, comm));
  if (!mine.ok()) return mine;
  for (int r = 0; r < world; ++r) {
    const char* packed = reinterpret_cast<const char*>(outcomes.data() + kOutcomeFloats * r);
    uint32_t code = 0, length = 0;
    std::memcpy(&code, packed, 4);
    std::memcpy(&length, packed + 4, 4);
    if (code == 0) continue;
    if (code > static_cast<uint32_t>(absl::StatusCode::kUnauthenticated)) {
      code = static_cast<uint32_t>(absl::StatusCode::kUnknown);
    }
    return absl::Status(
        static_cast<absl::StatusCode>(code),
        absl::StrCat(what, " failed on rank ", r, ": ",
                     absl::string_view(packed + 8, std::min<uint32_t>(length, kMessageBytes))));
  }
  return absl::OkStatus();
}

// A float all-gather of `per_rank` floats from each rank, in place in `all` (this rank's slot
// filled by the caller); raw bytes travel, as with the shard records.
absl::Status GatherInPlace(comm::Communicator* dp, device::Ops& ops, const comm::CommOptions& comm,
                           std::vector<float>& all, int per_rank) {
  return zero::AllGatherHostFloats(*dp, ops, all.data(), per_rank, comm);
}

// 64-bit FNV-1a: the same on every rank and every build (unlike absl::Hash, seeded per process).
uint64_t Fnv1a64(absl::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

// checkpoint.tag_validation: whether every rank passed the same tag, learned by every rank before
// anything is written. One all-gather of each tag's length and hash; only when they differ, a
// second of the tags themselves, to name them (and, under Warn, to save under rank 0's, so the
// save stays one checkpoint). Returns the tag to save under.
absl::StatusOr<std::string> AgreeOnTag(comm::Communicator* dp, device::Ops& ops,
                                       const CheckpointOptions& options, config::TagValidation mode,
                                       const std::string& tag) {
  if (mode == config::TagValidation::kIgnore || dp == nullptr || dp->size() == 1) return tag;
  const int world = dp->size();
  constexpr int kDigestFloats = 4;  // length (u64), hash (u64)
  std::vector<float> digests(static_cast<size_t>(kDigestFloats) * world);
  const uint64_t mine[2] = {tag.size(), Fnv1a64(tag)};
  std::memcpy(digests.data() + kDigestFloats * dp->rank(), mine, sizeof(mine));
  DT_RETURN_IF_ERROR(GatherInPlace(dp, ops, options.comm, digests, kDigestFloats));
  uint64_t longest = 0;
  bool same = true;
  for (int r = 0; r < world; ++r) {
    uint64_t digest[2];
    std::memcpy(digest, digests.data() + kDigestFloats * r, sizeof(digest));
    longest = std::max(longest, digest[0]);
    same = same && digest[0] == mine[0] && digest[1] == mine[1];
  }
  // Every rank saw the same digests: when one differs from a rank's own, it differs from some
  // other rank's too, so every rank takes the same branch below.
  if (same) return tag;
  constexpr uint64_t kMaxTagBytes = 4096;  // a tag is one path component: far below this
  if (longest > kMaxTagBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint tags differ across ranks, one of them ", longest, " bytes long"));
  }
  const int per_rank = static_cast<int>((longest + 3) / 4);
  std::vector<float> texts(static_cast<size_t>(per_rank) * world, 0.f);
  std::memcpy(texts.data() + static_cast<size_t>(per_rank) * dp->rank(), tag.data(), tag.size());
  DT_RETURN_IF_ERROR(GatherInPlace(dp, ops, options.comm, texts, per_rank));
  std::vector<std::string> tags(world);
  for (int r = 0; r < world; ++r) {
    uint64_t length = 0;
    std::memcpy(&length, digests.data() + kDigestFloats * r, sizeof(length));
    tags[r].assign(reinterpret_cast<const char*>(texts.data() + static_cast<size_t>(per_rank) * r),
                   length);
  }
  std::vector<std::string> differing;
  for (int r = 1; r < world; ++r) {
    if (tags[r] != tags[0]) differing.push_back(absl::StrCat("rank ", r, " \"", tags[r], "\""));
  }
  constexpr size_t kNamed = 8;
  const size_t more = differing.size() > kNamed ? differing.size() - kNamed : 0;
  differing.resize(std::min(differing.size(), kNamed));
  const std::string message = absl::StrCat(
      "checkpoint tags differ across ranks: rank 0 \"", tags[0], "\", ",
      absl::StrJoin(differing, ", "), more > 0 ? absl::StrCat(" and ", more, " more ranks") : "");
  if (mode == config::TagValidation::kFail) {
    return absl::FailedPreconditionError(
        absl::StrCat(message, " (checkpoint.tag_validation is Fail)"));
  }
  const std::string warning =
      absl::StrCat(message, "; saving under rank 0's tag (checkpoint.tag_validation is Warn)");
  if (options.warn) {
    options.warn(warning);
  } else {
    absl::FPrintF(stderr, "warning: %s\n", warning);
  }
  return tags[0];
}

}  // namespace

absl::Status SaveCheckpoint(Engine& engine, comm::Communicator* group,
                            const CheckpointOptions& options, const std::string& requested_tag,
                            absl::string_view rank_state, nlohmann::json meta) {
  const int rank = Rank(group), world = World(group);
  if (!engine.is_gpt() && options.pipeline.size() > 1) {
    return absl::InvalidArgumentError("a pipeline grid for a model other than the built-in GPT");
  }
  DT_ASSIGN_OR_RETURN(const std::string tag,
                      AgreeOnTag(group, engine.ops(), options,
                                 engine.spec().checkpoint.tag_validation, requested_tag));
  // Phase 1: rank 0 opens the save (the tmp dir), everyone learns whether it could.
  std::unique_ptr<checkpoint::CheckpointWriter> writer;
  absl::Status status;
  if (rank == 0) {
    auto w =
        checkpoint::CheckpointWriter::Begin(options.env, options.root, tag, engine.global_steps());
    status = w.status();
    if (w.ok()) writer = std::move(*w);
  }
  DT_RETURN_IF_ERROR(AgreeAll(group, engine.ops(), options.comm, status, "opening the checkpoint"));

  // Phase 2: every rank writes its shard (a failure is reported in phase 3, not returned here:
  // the other ranks are waiting in the gather).
  absl::StatusOr<checkpoint::ShardRecord> record =
      [&]() -> absl::StatusOr<checkpoint::ShardRecord> {
    // Straight from the engine's buffers to the file: no copy of the state (NVMe offload: a
    // bounded staging buffer at a time).
    std::string head;
    DT_ASSIGN_OR_RETURN(const env::ChunkSource state, engine.SaveStateChunks(&head));
    const uint64_t n = rank_state.size();
    const env::ChunkSource prefix = env::PiecesSource(
        {absl::string_view(reinterpret_cast<const char*>(&n), sizeof(n)), rank_state});
    bool prefix_done = false;
    return checkpoint::WriteShardFile(options.env, checkpoint::CheckpointTmpDir(options.root, tag),
                                      ShardName(rank), [&]() -> absl::StatusOr<absl::string_view> {
                                        if (!prefix_done) {
                                          DT_ASSIGN_OR_RETURN(const absl::string_view piece,
                                                              prefix());
                                          if (!piece.empty()) return piece;
                                          prefix_done = true;
                                        }
                                        return state();
                                      });
  }();
  // zero_optimization.gather_16bit_weights_on_model_save: the consolidated model joins the save.
  // Every rank takes part in the gather (collective under ZeRO-3 and, mixed, from stage 1 on);
  // rank 0 alone holds the full weights and writes them into the save before the commit. A
  // failure here counts as this rank's failure to write its part.
  std::optional<checkpoint::ShardRecord> model_file;
  if (engine.spec().zero.gather_16bit_weights_on_model_save) {
    const absl::Status written = [&]() -> absl::Status {
      DT_ASSIGN_OR_RETURN(
          const std::vector<float> weights,
          options.gather_model ? options.gather_model() : engine.GatherParams(/*keep=*/rank == 0));
      if (rank != 0) return absl::OkStatus();
      // The GPT as llm.c's model file; any other model as safetensors under its parameter names.
      std::vector<int32_t> llmc_header;
      std::string safetensors_header;
      std::vector<absl::string_view> pieces;
      if (engine.is_gpt()) {
        DT_ASSIGN_OR_RETURN(const model::ParamLayout whole,
                            model::ParamLayout::ForGpt(engine.gpt().config()));
        DT_ASSIGN_OR_RETURN(pieces, model::LlmcModelPieces(engine.gpt().config(), whole,
                                                           weights.data(), &llmc_header));
      } else {
        DT_ASSIGN_OR_RETURN(
            pieces,
            model::SafetensorsPieces(model::LayoutTensors(engine.model().layout(), weights.data()),
                                     {{"format", "dstrain"}}, &safetensors_header));
      }
      DT_ASSIGN_OR_RETURN(model_file,
                          checkpoint::WriteShardFile(
                              options.env, checkpoint::CheckpointTmpDir(options.root, tag),
                              engine.is_gpt() ? kModelFileName : kModuleModelFileName, pieces));
      return absl::OkStatus();
    }();
    if (record.ok() && !written.ok()) record = written;
  }

  // Phase 3: rank 0 gathers the records and commits.
  std::vector<float> records(kRecordFloats * world);
  PackRecord(record.ok() ? *record : checkpoint::ShardRecord{}, record.ok(),
             records.data() + kRecordFloats * rank);
  if (group != nullptr && world > 1) {
    DT_RETURN_IF_ERROR(zero::AllGatherHostFloats(*group, engine.ops(), records.data(),
                                                 kRecordFloats, options.comm));
  }
  status = record.status();
  if (rank == 0 && status.ok()) {
    for (int r = 0; r < world && status.ok(); ++r) {
      bool ok = false;
      checkpoint::ShardRecord rec = UnpackRecord(records.data() + kRecordFloats * r, r, &ok);
      status = ok ? writer->AddShard(std::move(rec))
                  : absl::AbortedError(absl::StrCat("rank ", r, " could not write its shard"));
    }
    if (status.ok() && model_file.has_value()) {
      status = writer->AddFile(*model_file);
      meta["consolidated_model"] = {{"name", model_file->name}, {"dtype", "fp32"}};
      if (engine.is_gpt()) {
        meta["consolidated_model"]["format"] = "llm.c";
        meta["consolidated_model"]["version"] = model::kLlmcModelVersionF32;
      } else {
        meta["consolidated_model"]["format"] = "safetensors";
      }
    }
    if (status.ok()) {
      meta["world_size"] = world;
      meta["zero_stage"] = engine.spec().zero.stage;
      meta["precision"] = std::string(config::PrecisionName(engine.spec()));
      meta["step"] = engine.global_steps();
      meta["reduce_bucket_size"] = engine.spec().zero.reduce_bucket_size;
      meta["model"] = internal::ModelToJson(engine);
      if (engine.is_gpt()) {
        const nlohmann::json grid =
            internal::PipelineToJson(options.pipeline, engine.gpt().config().n_layer);
        if (!grid.is_null()) meta["pipeline"] = grid;
      }
      status = writer->Commit(meta);
    }
    if (status.ok() && options.keep_last > 0) {
      status = checkpoint::KeepLast(options.env, options.root, options.keep_last);
    }
  }
  return AgreeAll(group, engine.ops(), options.comm, status,
                  absl::StrCat("saving checkpoint ", tag));
}

absl::StatusOr<std::string> LoadCheckpoint(Engine& engine, comm::Communicator* group,
                                           const CheckpointOptions& options,
                                           absl::string_view tag) {
  const int rank = Rank(group), world = World(group);
  if (!engine.is_gpt() && options.pipeline.size() > 1) {
    return absl::InvalidArgumentError("a pipeline grid for a model other than the built-in GPT");
  }
  // Phase 1: every rank opens the checkpoint and learns whether it can load its own shard (the
  // checkpoint has this run's world size, stage and precision) or must reshard.
  std::unique_ptr<checkpoint::CheckpointReader> reader;
  internal::SavedGrid saved;
  bool reshard = false, same_precision = true;
  absl::Status status = [&]() -> absl::Status {
    DT_ASSIGN_OR_RETURN(reader, checkpoint::CheckpointReader::Open(options.env, options.root, tag));
    const nlohmann::json& meta = reader->manifest().meta;
    DT_RETURN_IF_ERROR(internal::CheckSavedModel(*reader, engine));
    nlohmann::json grid;  // null: no pipeline
    if (engine.is_gpt()) {
      const model::GptConfig& shape = engine.gpt().config();
      DT_ASSIGN_OR_RETURN(saved, internal::ReadSavedGrid(*reader, shape));
      grid = internal::PipelineToJson(options.pipeline, shape.n_layer);
    } else {
      DT_ASSIGN_OR_RETURN(saved, internal::ReadSavedGrid(*reader, engine.model().layout()));
    }
    same_precision =
        meta.value("precision", std::string()) == std::string(config::PrecisionName(engine.spec()));
    // Another grid (pipeline stages or their blocks) is another layout per shard.
    const bool same_grid = meta.value("pipeline", nlohmann::json()) == grid;
    reshard = saved.world != world || saved.zero_stage != engine.spec().zero.stage ||
              !same_precision || !same_grid;
    return absl::OkStatus();
  }();
  DT_RETURN_IF_ERROR(AgreeAll(group, engine.ops(), options.comm, status, "opening the checkpoint"));

  // Phase 2: read and restore, not collective; all ranks agree on the outcome before the
  // collective part (stages 1-2 gather parameters again). A shard is
  // [u64 n][n bytes of per-rank state][engine state].
  std::string rank_state;
  status = [&]() -> absl::Status {
    if (reshard) {
      // This rank's share only, range by range into the engine's buffers. Each old shard r is
      // streamed whole through its checksum by new rank r % world, and the agreement below
      // makes that result every rank's before anyone trains.
      std::vector<zero::Piece> want;
      for (const zero::Piece& p : engine.zero().partition().OwnedPieces()) {
        if (p.count > 0) want.push_back(p);
      }
      DT_RETURN_IF_ERROR(engine.BeginResharded());
      DT_ASSIGN_OR_RETURN(internal::ReshardPrefix prefix,
                          internal::ReadResharded(
                              *reader, saved, engine.model().layout(), want, /*arrays=*/3,
                              [&](int r) { return r % world == rank; },
                              [&](int array, int64_t flat, int64_t count, env::ByteSource& source) {
                                return engine.zero().StoreOwned(array, flat, count, source);
                              }));
      DT_RETURN_IF_ERROR(engine.FinishResharded(prefix.counters, same_precision));
      rank_state = std::move(prefix.rank_state);
      return absl::OkStatus();
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
  DT_RETURN_IF_ERROR(
      AgreeAllShared(group, engine.ops(), options.comm, status, "loading the checkpoint"));
  DT_RETURN_IF_ERROR(engine.FinishLoad());
  return rank_state;
}

absl::StatusOr<CheckpointWeights> ReadCheckpointWeights(env::Env* env, const std::string& root,
                                                        absl::string_view tag) {
  DT_ASSIGN_OR_RETURN(auto reader, checkpoint::CheckpointReader::Open(env, root, tag));
  CheckpointWeights out;
  out.module = internal::HoldsModule(*reader);
  out.meta = reader->manifest().meta;
  // The shards hold at least the fp32 weights: a model they cannot hold is refused before its
  // layout is built, whose work grows with its size (a damaged manifest may say 2^31 - 1 layers).
  double shard_bytes = 0;
  for (const checkpoint::ShardRecord& s : reader->manifest().shards) shard_bytes += s.bytes;
  const auto check_count = [&](double count) -> absl::Status {
    if (count > 0 && 4 * count > shard_bytes) {
      return absl::DataLossError(absl::StrCat(
          env::JoinPath(reader->dir(), checkpoint::kManifestName), ": its shards hold ",
          absl::StrFormat("%.0f", shard_bytes), " bytes, too few for the weights of its model (",
          absl::StrFormat("%.0f", count), " parameters)"));
    }
    return absl::OkStatus();
  };
  internal::SavedGrid saved;
  if (out.module) {
    DT_ASSIGN_OR_RETURN(out.layout, internal::ModuleLayoutFromManifest(*reader));
    DT_RETURN_IF_ERROR(check_count(static_cast<double>(out.layout.total())));
    DT_ASSIGN_OR_RETURN(saved, internal::ReadSavedGrid(*reader, out.layout));
  } else {
    DT_ASSIGN_OR_RETURN(out.gpt, internal::ShapeFromManifest(*reader));
    DT_RETURN_IF_ERROR(check_count(model::GptParameterCount(out.gpt)));
    DT_ASSIGN_OR_RETURN(out.layout, model::ParamLayout::ForGpt(out.gpt));
    DT_ASSIGN_OR_RETURN(saved, internal::ReadSavedGrid(*reader, out.gpt));
  }
  // The weights only, read in place; every shard is streamed through its checksum. A pipelined
  // checkpoint's stages each give their parameters.
  out.weights.assign(out.layout.total(), 0.f);
  DT_RETURN_IF_ERROR(internal::ReadResharded(
                         *reader, saved, out.layout, {zero::Piece{0, 0, out.layout.total()}},
                         /*arrays=*/1, [](int) { return true; },
                         [&](int, int64_t flat, int64_t count, env::ByteSource& source) {
                           return source.Read(out.weights.data() + flat, count * sizeof(float));
                         })
                         .status());
  return out;
}

absl::Status ExportCheckpoint(env::Env* env, const std::string& root, absl::string_view tag,
                              const std::string& out_path, ExportFormat format) {
  if (format == ExportFormat::kLlmc) {
    // Refused before any shard is read.
    DT_ASSIGN_OR_RETURN(auto reader, checkpoint::CheckpointReader::Open(env, root, tag));
    if (internal::HoldsModule(*reader)) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint ", reader->dir(),
                       " holds a user module; llm.c's format holds the GPT only: export it as "
                       "safetensors"));
    }
  }
  DT_ASSIGN_OR_RETURN(const CheckpointWeights w, ReadCheckpointWeights(env, root, tag));
  if (format == ExportFormat::kLlmc) {
    return model::WriteLlmcModel(out_path, w.gpt, w.layout, w.weights.data());
  }
  return WriteSafetensors(env, w, out_path);
}

absl::Status WriteSafetensors(env::Env* env, const CheckpointWeights& w,
                              const std::string& out_path) {
  std::map<std::string, std::string> metadata = {
      {"format", "dstrain"},
      {"model", w.module ? "module" : "gpt"},
      {"step", absl::StrCat(w.meta.value("step", int64_t{0}))}};
  std::string header;
  DT_ASSIGN_OR_RETURN(const std::vector<absl::string_view> pieces,
                      model::SafetensorsPieces(model::LayoutTensors(w.layout, w.weights.data()),
                                               metadata, &header));
  return env::WriteFileAtomically(env, out_path, pieces);
}

}  // namespace dstrain::engine
