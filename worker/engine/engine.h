// Engine: the training step around a model, mirroring deepspeed.initialize's engine.
//
//   auto engine = Engine::Initialize(std::move(gpt), spec, &ops);
//   for each micro-batch: engine->Forward(x, y); engine->Backward();
//                         engine->Step();   // optimizer step only at the accumulation boundary
//
// Parameters, gradients and optimizer state live in a zero::ZeroState (ZeRO stage 0-3 per
// zero_optimization.stage) on the model's device (its device::Ops, whose allocator accounts them
// by category); the engine names no kernel. The engine scales each
// micro-batch's loss by 1/gradient_accumulation_steps as DeepSpeed does, clips by global gradient
// norm (gradient_clipping, PyTorch's clip_grad_norm_ rule), applies Adam/AdamW with DeepSpeed's
// adam_w_mode rule and runs the LR schedule once per optimizer step. With a data-parallel
// communicator of more than one rank, parameters are broadcast from rank 0 at initialisation and
// gradients are averaged over the ranks (stage 0: all-reduce; 1-3: reduce-scatter to the rank
// that owns them), so every rank takes the same step. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/status/status_macros.h"
#include "worker/comm/communicator.h"
#include "worker/config/config.h"
#include "worker/engine/lr_schedule.h"
#include "worker/env/byte_source.h"
#include "worker/model/gpt.h"
#include "worker/model/model.h"
#include "worker/precision/loss_scaler.h"
#include "worker/tensor/tensor.h"
#include "worker/zero/zero_state.h"

namespace dstrain::engine {

struct StepStats {
  int64_t step = 0;         // optimizer steps taken so far, this one included
  double loss = 0.0;        // mean loss over the micro-batches (and data-parallel ranks)
  double lr = 0.0;          // learning rate this step used
  double grad_norm = 0.0;   // global L2 norm of the gradients before clipping
  double clip_coef = 1.0;   // factor the gradients were multiplied by (1 = not clipped)
  double loss_scale = 1.0;  // the scale this step's gradients carried (fp16; else 1)
  bool skipped = false;     // an overflow skipped the update (mixed precision)
};

// A pipeline stage's groups (worker/pipe): the engine of a stage reduces the tied embedding's
// gradients with the other end of its pipeline, and sums the gradient norm and reports the loss
// over the pipeline's stages.
struct PipelineGroups {
  comm::Communicator* pipe = nullptr;  // this data rank's stages, in stage order
  comm::Communicator* tied = nullptr;  // the first and the last stage of this pipeline, or null
  int stage = 0, stages = 1;
};

class Engine {
 public:
  // Allocates parameters (initialised from model.init_from or with init_seed), gradients and
  // optimizer state. Errors: kInvalidArgument for an init_from file that does not match the
  // model shape, kResourceExhausted when memory runs out.
  // The model's device (model->ops()) is the engine's. `dp` (optional, not owned, outlives the
  // engine) is the data-parallel group. `offload` names an offloaded optimizer's files and log
  // (its aio settings are the spec's).
  static absl::StatusOr<std::unique_ptr<Engine>> Initialize(std::unique_ptr<model::Model> model,
                                                            const config::JobSpec& spec,
                                                            comm::Communicator* dp = nullptr,
                                                            comm::CommOptions comm_options = {},
                                                            zero::OffloadContext offload = {});

  // This engine runs one stage of a pipeline (its model a slice of the blocks). Before training.
  void SetPipeline(const PipelineGroups& groups);

  // Forward and fused loss backward of one training micro-batch (micro_batch × seq_len tokens)
  // into activation buffer `buffer`. Returns the micro-batch's mean loss (unscaled; 0 on a
  // pipeline stage without the head). A stage that does not embed reads its input from the
  // model's stage_input(buffer) and takes null inputs; one without the head takes null targets.
  // The GPT only (kFailedPrecondition for another model: pass a Batch).
  absl::StatusOr<float> Forward(const int32_t* inputs, const int32_t* targets, int buffer = 0);
  // The same for any model: the micro-batch as named host arrays (model/model.h), its loss's
  // gradient scaled by the loss scale over gradient_accumulation_steps.
  absl::StatusOr<float> Forward(const model::Batch& batch, int buffer = 0);
  // Accumulates buffer `buffer`'s micro-batch's gradients.
  absl::Status Backward(int buffer = 0);
  // At the gradient-accumulation boundary: clip, optimizer update, LR schedule, zero gradients,
  // and returns the step's stats. Before the boundary returns std::nullopt (DeepSpeed's
  // engine.step() is likewise a no-op between boundaries).
  absl::StatusOr<std::optional<StepStats>> Step();

  // This rank's training state between optimizer steps, as bytes for its checkpoint shard:
  // ZeroState's chunks (parameters or master weights, Adam moments) plus the step counters and
  // the loss scaler. Every rank calls both; LoadState is collective from ZeRO stage 1 on and
  // needs the same world size, stage and precision (kFailedPrecondition otherwise). Training
  // resumed from it takes bitwise the steps the uninterrupted run takes.
  absl::StatusOr<std::string> SaveState();
  absl::Status LoadState(absl::string_view state);
  // The same without copies, for checkpoints of hundreds of MB. SaveStateChunks returns the state
  // as chunks whose concatenation is SaveState(): the first is `*head` (filled here; keep it alive
  // and unchanged), the rest point into the engine's buffers (under NVMe offload: a staging
  // buffer refilled from the swap file), each valid until the next; use it before the next step.
  // LoadState reads the state from `state` straight into the engine's buffers and is not
  // collective; every rank then calls FinishLoad (collective from stage 1 on) — or, after an error
  // anywhere, fails the load: the state is undefined until a load succeeds.
  absl::StatusOr<env::ChunkSource> SaveStateChunks(std::string* head);
  absl::Status LoadState(env::ByteSource& state);
  absl::Status FinishLoad();
  // Resharding: the state of a run at another world size, stage or precision, put together range
  // by range without the whole of it in memory. BeginResharded, then zero().StoreOwned for every
  // flat range of this rank's share of the writer's weights and Adam moments, then
  // FinishResharded with the writer's step counters (ReadCounters of its rank 0's state); the loss
  // scaler comes along only when `same_precision`. Not collective: every rank then calls
  // FinishLoad, or, after an error anywhere, fails the load.
  absl::Status BeginResharded();
  absl::Status FinishResharded(const nlohmann::json& counters, bool same_precision);
  // The step counters at the front of a saved state ([u64 n][n bytes of JSON]), read from `state`,
  // which is left at the ZeroState shard that follows.
  static absl::StatusOr<nlohmann::json> ReadCounters(env::ByteSource& state);

  // Forward only (no gradients) on a batch of B sequences of length T; returns the mean loss.
  // The GPT only.
  absl::StatusOr<float> EvalLoss(const int32_t* inputs, const int32_t* targets, int B, int T);
  // The same for any model.
  absl::StatusOr<float> EvalLoss(const model::Batch& batch);

  model::Model& model() { return *model_; }
  // The built-in GPT's own interface (pipelines, its file formats, sampling).
  // REQUIRES: the engine trains a model::Gpt (is_gpt()).
  bool is_gpt() const { return gpt_ != nullptr; }
  model::Gpt& gpt() {
    DT_CHECK(gpt_ != nullptr);
    return *gpt_;
  }
  device::Ops& ops() const { return model_->ops(); }
  // The full fp32 parameters in the model's flat layout, in host memory. Collective under ZeRO-3
  // and, with mixed precision, from stage 1 on: every rank calls; with keep = false a rank only
  // takes part and gets an empty vector (no full copy in memory).
  absl::StatusOr<std::vector<float>> GatherParams(bool keep = true);
  // The same on the device (for evaluating or sampling there), under MemoryCategory::kOther;
  // an undefined tensor with keep = false.
  absl::StatusOr<tensor::Tensor> GatherParamsOnDevice(bool keep = true);
  zero::ZeroState& zero() { return *zero_; }
  int64_t global_steps() const { return global_steps_; }
  int64_t skipped_steps() const { return skipped_steps_; }
  int micro_steps_in_step() const { return micro_step_; }
  const precision::LossScaler& loss_scaler() const { return *scaler_; }
  const config::JobSpec& spec() const { return spec_; }
  tensor::Allocator* allocator() const { return ops().allocator(); }

 private:
  absl::StatusOr<std::optional<StepStats>> FinishStepStats(StepStats stats);
  // The step counters (and the loss scaler) from a saved state's counters object.
  void RestoreCounters(const nlohmann::json& counters, bool restore_scaler);
  Engine(std::unique_ptr<model::Model> model, const config::JobSpec& spec, comm::Communicator* dp,
         std::unique_ptr<LrSchedule> schedule);
  // The initial parameters (model.init_from, or initialised with model.init_seed) into a full
  // flat f32 tensor on the device.
  absl::StatusOr<tensor::Tensor> InitialParams();

  std::unique_ptr<model::Model> model_;
  model::Gpt* gpt_;  // model_ when it is the GPT, else null
  config::JobSpec spec_;
  comm::Communicator* dp_;          // null or size 1: single rank
  comm::CommOptions comm_options_;  // timeout of every collective
  std::unique_ptr<LrSchedule> schedule_;
  std::unique_ptr<zero::ZeroState> zero_;
  std::unique_ptr<precision::LossScaler> scaler_;
  int64_t applied_steps_ = 0;  // optimizer updates taken: the scheduler's and Adam's step count
  int64_t skipped_steps_ = 0;  // overflowed steps
  int64_t global_steps_ = 0;
  int micro_step_ = 0;        // micro-batches accumulated since the last optimizer step
  double loss_sum_ = 0.0;     // their losses
  int pending_forwards_ = 0;  // forwards whose backward has not run
  PipelineGroups pipeline_;
  tensor::Tensor loss_scalar_;  // the loss's all-reduce on a device without host access
};

}  // namespace dstrain::engine
