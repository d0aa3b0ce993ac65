// Checkpoints of a training run, taken and loaded by every rank of the job together.
//
// DeepSpeed hangs when only rank 0 calls save; here every rank must call SaveCheckpoint, and the
// collectives inside turn a missing rank into an error within the communication timeout.
// Rank r writes its shard rank_%05d.bin (rank_00001.bin for rank 1) = [u64 n][n bytes of the
// caller's per-rank state, e.g. the data-loader position][Engine::SaveState()] into the save's tmp
// dir (and, under zero_optimization.gather_16bit_weights_on_model_save, rank 0 the consolidated
// model.bin, llm.c's fp32 format, gathered from every rank); rank 0 gathers the shard records,
// writes the manifest (meta: world size, ZeRO stage, precision, step, model shape, the caller's
// fields) and commits by worker/checkpoint/commit.h's protocol, then keeps the newest
// `keep_last`. All ranks return the same outcome.
//
// The group the functions below take is the job's: its data-parallel group, or with pipeline
// parallelism the whole grid (every stage's ranks, pipe outermost), each rank's shard named by
// its rank there and holding its stage's slice of the model partitioned over the stage's data
// ranks (the engine's own data-parallel group); meta.pipeline records every stage's blocks.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/comm/communicator.h"
#include "worker/engine/engine.h"
#include "worker/env/env.h"
#include "worker/model/param_layout.h"

namespace dstrain::engine {

struct CheckpointOptions {
  env::Env* env = nullptr;
  std::string root;        // checkpoint directory
  int keep_last = 0;       // retention after a save (0: keep all)
  comm::CommOptions comm;  // timeout of the collectives inside
  // Where warnings go (checkpoint.tag_validation "Warn"); null: standard error.
  std::function<void(const std::string&)> warn;
  // A pipelined run: every stage's blocks, in stage order (empty or one stage: no pipeline). A
  // load whose grid differs from the saved one reshards.
  std::vector<model::BlockRange> pipeline;
  // Under gather_16bit_weights_on_model_save: the whole model's fp32 weights in its flat layout
  // on the group's rank 0 (empty elsewhere), every rank calling. Null: the engine's GatherParams
  // (right for a run without pipeline).
  std::function<absl::StatusOr<std::vector<float>>()> gather_model;
};

// Saves `tag` at the engine's current step. `group`: the job's group (above; null: one rank).
// Under the job's checkpoint.tag_validation (DeepSpeed's), the ranks first compare their tags:
// Fail fails the save on every rank with kFailedPrecondition naming the tags, before anything is
// written; Warn warns (options.warn) and every rank saves under rank 0's tag; Ignore compares
// nothing (a rank whose tag differs then writes into a save that does not exist, and the save
// fails on every rank).
absl::Status SaveCheckpoint(Engine& engine, comm::Communicator* group,
                            const CheckpointOptions& options, const std::string& tag,
                            absl::string_view rank_state,
                            nlohmann::json meta = nlohmann::json::object());

// Loads `tag` ("latest": the newest committed) into the engine on every rank and returns this
// rank's per-rank state. A checkpoint written at another world size, ZeRO stage, precision or
// pipeline grid is resharded (parameters found by name in the saved stages): every rank reads, from
// each old shard, only the byte ranges of the fp32 weights and Adam moments that its own partition
// keeps, straight into the engine's buffers (no shard and no full copy of the state is held: host
// memory beyond the engine is a 1 MiB streaming buffer, plus a 4 MiB staging buffer on a device the
// host cannot address). Old shard r is streamed whole through its checksum by new rank r % world
// size, and no rank goes on before every rank knows the outcome. The per-rank state returned is
// then rank 0's. kNotFound when nothing is committed; kFailedPrecondition for another model (naming
// every field of the shape that differs); kDataLoss for a damaged shard, naming the file, on every
// rank. Any rank's failure fails every rank, and the engine's state is then undefined: the caller
// must not train on it. The own shard (same world size, stage and precision) is read straight into
// the engine's buffers, its checksum checked before any rank goes on.
absl::StatusOr<std::string> LoadCheckpoint(Engine& engine, comm::Communicator* group,
                                           const CheckpointOptions& options, absl::string_view tag);

// The fp32 weights of committed checkpoint `tag` under `root` (master weights under mixed
// precision), reassembled from every rank's shard, each streamed through its checksum. Needs no
// engine and no other ranks. kNotFound when nothing is committed; kDataLoss for a damaged
// checkpoint, naming the file.
struct CheckpointWeights {
  model::ParamLayout layout;   // the GPT's, or the module's as its manifest declares it
  std::vector<float> weights;  // layout.total() floats in its order
  nlohmann::json meta;         // the manifest's meta (the saving job's fields among them)
  bool module = false;         // a user module's (meta.model.type "module"), not the GPT's
  model::GptConfig gpt;        // the GPT's shape (not a module's)
};
absl::StatusOr<CheckpointWeights> ReadCheckpointWeights(env::Env* env, const std::string& root,
                                                        absl::string_view tag);

// `dstrain export`: the fp32 weights of committed checkpoint `tag` under `root` (master weights
// under mixed precision), reassembled from every rank's shard (each streamed through its checksum;
// only the weights are kept), written atomically to `out_path` as one llm.c model file (magic
// 20240326, which model.init_from reads; the GPT only: kInvalidArgument for a module's checkpoint)
// or as safetensors (model/safetensors.h): every parameter under its layout name, metadata
// format "dstrain", model "gpt" or "module" and the step. Needs no engine and no other ranks.
enum class ExportFormat { kLlmc, kSafetensors };
// The safetensors half of ExportCheckpoint, for weights read already.
absl::Status WriteSafetensors(env::Env* env, const CheckpointWeights& weights,
                              const std::string& out_path);
absl::Status ExportCheckpoint(env::Env* env, const std::string& root, absl::string_view tag,
                              const std::string& out_path,
                              ExportFormat format = ExportFormat::kLlmc);

}  // namespace dstrain::engine
