#include "worker/engine/checkpoint_io.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_macros.h"
#include "worker/checkpoint/commit.h"

namespace dstrain::engine {
namespace {

std::string ShardName(int rank) { return absl::StrFormat("rank_%05d.bin", rank); }

int Rank(Communicator* dp) { return dp != nullptr ? dp->rank() : 0; }
int World(Communicator* dp) { return dp != nullptr ? dp->size() : 1; }

std::string Precision(const config::JobSpec& spec) {
  return spec.fp16.enabled ? "fp16" : (spec.bf16.enabled ? "bf16" : "fp32");
}

// Every rank learns whether every rank succeeded: the max over ranks of a failure flag.
absl::Status AgreeAll(Communicator* dp, const CommOptions& comm, const absl::Status& mine,
                      absl::string_view what) {
  if (dp == nullptr || dp->size() == 1) return mine;
  float failed = mine.ok() ? 0.f : 1.f;
  DT_ASSIGN_OR_RETURN(auto work,
                      dp->AllReduce(CommBuffer{&failed, 1, DType::kF32}, ReduceOp::kMax, comm));
  DT_RETURN_IF_ERROR(work->Wait());
  if (!mine.ok()) return mine;
  if (failed != 0.f) return absl::AbortedError(absl::StrCat(what, " failed on another rank"));
  return absl::OkStatus();
}

// A shard record travels through a float all-gather as raw bits (a gather copies, never adds).
constexpr int kRecordFloats = 4;  // bytes (2 x u32), crc32c, ok
void PackRecord(const ShardRecord& r, bool ok, float* out) {
  const uint32_t words[kRecordFloats] = {
      static_cast<uint32_t>(r.bytes), static_cast<uint32_t>(r.bytes >> 32), r.crc32c, ok ? 1u : 0u};
  std::memcpy(out, words, sizeof(words));
}
ShardRecord UnpackRecord(const float* in, int rank, bool* ok) {
  uint32_t words[kRecordFloats];
  std::memcpy(words, in, sizeof(words));
  *ok = words[3] == 1u;
  return ShardRecord{ShardName(rank), (uint64_t{words[1]} << 32) | words[0], words[2]};
}

}  // namespace

absl::Status SaveCheckpoint(Engine& engine, Communicator* dp, const CheckpointOptions& options,
                            const std::string& tag, absl::string_view rank_state,
                            nlohmann::json meta) {
  const int rank = Rank(dp), world = World(dp);
  // Phase 1: rank 0 opens the save (the tmp dir), everyone learns whether it could.
  std::unique_ptr<CheckpointWriter> writer;
  absl::Status status;
  if (rank == 0) {
    auto w = CheckpointWriter::Begin(options.env, options.root, tag, engine.global_steps());
    status = w.status();
    if (w.ok()) writer = std::move(*w);
  }
  DT_RETURN_IF_ERROR(AgreeAll(dp, options.comm, status, "opening the checkpoint"));

  // Phase 2: every rank writes its shard (a failure is reported in phase 3, not returned here:
  // the other ranks are waiting in the gather).
  absl::StatusOr<ShardRecord> record = [&]() -> absl::StatusOr<ShardRecord> {
    DT_ASSIGN_OR_RETURN(std::string state, engine.SaveState());
    std::string shard;
    const uint64_t n = rank_state.size();
    shard.append(reinterpret_cast<const char*>(&n), sizeof(n));
    shard.append(rank_state.data(), rank_state.size());
    shard += state;
    return WriteShardFile(options.env, CheckpointTmpDir(options.root, tag), ShardName(rank), shard);
  }();

  // Phase 3: rank 0 gathers the records and commits.
  std::vector<float> records(kRecordFloats * world);
  PackRecord(record.ok() ? *record : ShardRecord{}, record.ok(),
             records.data() + kRecordFloats * rank);
  if (dp != nullptr && world > 1) {
    DT_ASSIGN_OR_RETURN(
        auto work,
        dp->AllGather(CommBuffer{records.data() + kRecordFloats * rank, kRecordFloats, DType::kF32},
                      CommBuffer{records.data(), kRecordFloats * world, DType::kF32},
                      options.comm));
    DT_RETURN_IF_ERROR(work->Wait());
  }
  status = record.status();
  if (rank == 0 && status.ok()) {
    for (int r = 0; r < world && status.ok(); ++r) {
      bool ok = false;
      ShardRecord rec = UnpackRecord(records.data() + kRecordFloats * r, r, &ok);
      status = ok ? writer->AddShard(std::move(rec))
                  : absl::AbortedError(absl::StrCat("rank ", r, " could not write its shard"));
    }
    if (status.ok()) {
      meta["world_size"] = world;
      meta["zero_stage"] = engine.spec().zero.stage;
      meta["precision"] = Precision(engine.spec());
      meta["step"] = engine.global_steps();
      meta["model"] = {{"n_layer", engine.model().config().n_layer},
                       {"n_embd", engine.model().config().n_embd},
                       {"padded_vocab_size", engine.model().config().padded_vocab_size}};
      status = writer->Commit(meta);
    }
    if (status.ok() && options.keep_last > 0) {
      status = KeepLast(options.env, options.root, options.keep_last);
    }
  }
  return AgreeAll(dp, options.comm, status, absl::StrCat("saving checkpoint ", tag));
}

absl::StatusOr<std::string> LoadCheckpoint(Engine& engine, Communicator* dp,
                                           const CheckpointOptions& options,
                                           absl::string_view tag) {
  const int rank = Rank(dp), world = World(dp);
  // Phase 1: every rank opens the checkpoint, checks it fits, reads its shard (CRC checked).
  std::string shard;
  absl::Status status = [&]() -> absl::Status {
    DT_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(options.env, options.root, tag));
    const nlohmann::json& meta = reader->manifest().meta;
    const std::string where = absl::StrCat("checkpoint ", reader->dir());
    if (meta.value("world_size", 0) != world ||
        meta.value("zero_stage", -1) != engine.spec().zero.stage ||
        meta.value("precision", std::string()) != Precision(engine.spec())) {
      return absl::FailedPreconditionError(
          absl::StrCat(where, " was written at world size ", meta.value("world_size", 0),
                       ", ZeRO stage ", meta.value("zero_stage", -1), ", ",
                       meta.value("precision", std::string("?")), "; this run has ", world, ", ",
                       engine.spec().zero.stage, ", ", Precision(engine.spec())));
    }
    DT_ASSIGN_OR_RETURN(shard, reader->ReadShard(ShardName(rank)));
    return absl::OkStatus();
  }();
  DT_RETURN_IF_ERROR(AgreeAll(dp, options.comm, status, "opening the checkpoint"));

  // Phase 2: restore (collective from stage 1 on).
  uint64_t n = 0;
  if (shard.size() < sizeof(n)) return absl::DataLossError("checkpoint shard: truncated");
  std::memcpy(&n, shard.data(), sizeof(n));
  if (shard.size() < sizeof(n) + n) return absl::DataLossError("checkpoint shard: truncated");
  DT_RETURN_IF_ERROR(engine.LoadState(absl::string_view(shard).substr(sizeof(n) + n)));
  return shard.substr(sizeof(n), n);
}

}  // namespace dstrain::engine
