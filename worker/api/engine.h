// dstrain::Initialize and dstrain::Engine: deepspeed.initialize for a dstrain::Module (module.h).
// docs/library.md is the guide.
//
//   #include "worker/api/engine.h"
//
//   absl::Status Train() {
//     DT_ASSIGN_OR_RETURN(std::unique_ptr<dstrain::Engine> engine,
//                         dstrain::Initialize(std::make_unique<MyModel>(), R"({
//                           "train_batch_size": 32,
//                           "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
//                           "zero_optimization": {"stage": 2}})"));
//     for (int step = 0; step < 100; ++step) {
//       for (int micro = 0; micro < engine->gradient_accumulation_steps(); ++micro) {
//         dstrain::Batch batch = NextBatch(engine->rank(), engine->micro_batch_size());
//         DT_ASSIGN_OR_RETURN(float loss, engine->Forward(batch));
//         DT_RETURN_IF_ERROR(engine->Backward());
//         DT_ASSIGN_OR_RETURN(std::optional<dstrain::StepStats> stats, engine->Step());
//       }
//     }
//     return engine->SaveCheckpoint("ckpt");
//   }
//
// Run it as one process, or as N with `dstrain launch --nproc N -- ./my_program ARGS`, which
// gives each process its rank, the world size and the rendezvous store in the environment
// (RANK, WORLD_SIZE, LOCAL_RANK, DSTRAIN_STORE), as torchrun does for deepspeed.initialize.
//
// The config is a DeepSpeed ds_config with DeepSpeed's keys, defaults and batch rules
// (config::ParseDeepSpeedConfig; a job file's model, data and job blocks are refused): every
// ZeRO stage, fp16/bf16 mixed precision, gradient accumulation, clipping, the optimizers and LR
// schedules, offload and checkpoints work for any module. Every call below that communicates is
// collective: every rank makes it, in the same order. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "worker/api/module.h"
#include "worker/config/config.h"
#include "worker/engine/engine.h"

namespace dstrain {

using StepStats = engine::StepStats;

struct InitializeOptions {
  // This process's rank and the number of processes. -1: from the environment (RANK and
  // WORLD_SIZE, as `dstrain launch` and torchrun set them), else 0 and 1.
  int rank = -1;
  int world_size = -1;
  // This process's index among the ranks on its host (picks its GPU). -1: $LOCAL_RANK, else the
  // rank.
  int local_rank = -1;
  // The rendezvous store the ranks meet at, "HOST:PORT" (`dstrain launch` serves one). "":
  // $DSTRAIN_STORE. Needed when world_size > 1.
  std::string store;
  // "cpu", "cuda" or "auto" (CUDA when this process sees a GPU). "": $DSTRAIN_DEVICE, else auto.
  std::string device;
  // The address this host's CPU groups (Gloo) bind to and publish to their peers; 127.0.0.1
  // serves ranks on one host. "": $DSTRAIN_BIND_ADDRESS, else 127.0.0.1.
  std::string bind_address;
  // Compute threads of this process. 0: $DSTRAIN_THREADS, else every CPU the process may use.
  int threads = 0;
  // Seeds every parameter's initialisation (module.h, Init), so every world size starts from the
  // same weights.
  uint64_t seed = 1337;
  // Resolves relative paths in the config (offload's nvme_path). "": the working directory.
  std::string base_dir;
  // How long a collective or the rendezvous waits for a peer before failing.
  absl::Duration comm_timeout = absl::Minutes(5);
};

// The full fp32 parameters (Engine::GatherParams), by name.
struct GatheredParams {
  std::vector<float> flat;  // in the layout's order, padding included
  const model::ParamLayout* layout = nullptr;
  // Parameter `name`'s values (kNotFound naming it when there is none), valid while `flat` is.
  absl::StatusOr<absl::Span<const float>> Get(absl::string_view name) const;
};

class Engine {
 public:
  ~Engine();

  // The training forward of one micro-batch (this rank's: micro_batch_size() samples); returns
  // its loss as the module computes it. The micro-batch's gradient is scaled by the loss scale
  // over gradient_accumulation_steps (DeepSpeed's rule); Backward computes it.
  absl::StatusOr<float> Forward(const Batch& batch);
  // Accumulates the last Forward's gradients. kFailedPrecondition without a Forward.
  absl::Status Backward();
  // At the gradient-accumulation boundary (every gradient_accumulation_steps() micro-batches):
  // averages the gradients over the ranks, clips, updates, advances the LR schedule, and returns
  // the step's statistics; between boundaries returns std::nullopt, as DeepSpeed's
  // engine.step() is a no-op there. Collective.
  absl::StatusOr<std::optional<StepStats>> Step();
  // The loss of a batch without gradients (the module's Forward with training() false).
  // Collective under ZeRO-3 (it gathers the parameters).
  absl::StatusOr<float> Evaluate(const Batch& batch);

  // DeepSpeed's save_checkpoint(save_dir, tag, client_state): every rank writes its shard of the
  // training state under `dir`/`tag` (default "global_step<N>"), committed atomically
  // (docs/checkpoints.md); `client_state` is kept with rank 0's shard and returned by
  // LoadCheckpoint. Between optimizer steps only (kFailedPrecondition mid-accumulation).
  // Collective; every rank returns the same outcome.
  absl::Status SaveCheckpoint(const std::string& dir, const std::string& tag = "",
                              absl::string_view client_state = "");
  // DeepSpeed's load_checkpoint(load_dir, tag): "latest" loads the newest committed save. A
  // checkpoint of another world size, ZeRO stage or precision is resharded. Returns the saved
  // client_state. kNotFound when nothing is committed; kFailedPrecondition naming every
  // parameter that differs when the checkpoint holds another module. Collective; after an error
  // the training state is undefined.
  absl::StatusOr<std::string> LoadCheckpoint(const std::string& dir,
                                             const std::string& tag = "latest");
  // The full fp32 parameters (the master weights under mixed precision) on every rank.
  // Collective under ZeRO-3 and, with mixed precision, from stage 1 on.
  absl::StatusOr<GatheredParams> GatherParams();

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  int64_t micro_batch_size() const { return engine_->spec().train_micro_batch_size_per_gpu; }
  int64_t gradient_accumulation_steps() const {
    return engine_->spec().gradient_accumulation_steps;
  }
  int64_t global_steps() const { return engine_->global_steps(); }
  // The parsed DeepSpeed config with every default filled in (`effective`) and its notes.
  const config::JobSpec& config() const { return engine_->spec(); }
  const model::ParamLayout& layout() { return engine_->model().layout(); }
  Module& module();
  // The engine underneath (ZeRO state, allocator accounting).
  engine::Engine& internal() { return *engine_; }

 private:
  struct Resources;
  friend absl::StatusOr<std::unique_ptr<Engine>> Initialize(std::unique_ptr<Module> module,
                                                            absl::string_view ds_config,
                                                            const InitializeOptions& options);
  Engine() = default;

  std::unique_ptr<Resources> resources_;  // device, store, group: outlive engine_
  std::unique_ptr<engine::Engine> engine_;
  int rank_ = 0, world_ = 1;
  absl::Duration comm_timeout_;
};

// deepspeed.initialize: parses `ds_config` (a JSON DeepSpeed config), opens this rank's device,
// joins the data-parallel group through the rendezvous store, lays out and initialises the
// module's parameters (identical on every rank) and builds the engine. Collective. Errors:
// kInvalidArgument naming the config key, the module's parameter, or the option or environment
// variable that is wrong; kDeadlineExceeded when a peer does not arrive within comm_timeout.
absl::StatusOr<std::unique_ptr<Engine>> Initialize(std::unique_ptr<Module> module,
                                                   absl::string_view ds_config,
                                                   const InitializeOptions& options = {});

}  // namespace dstrain
