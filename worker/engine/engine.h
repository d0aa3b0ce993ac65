// Engine: the training step around a model, mirroring deepspeed.initialize's engine.
//
//   auto engine = Engine::Initialize(std::move(gpt), spec, &allocator);
//   for each micro-batch: engine->Forward(x, y); engine->Backward();
//                         engine->Step();   // optimizer step only at the accumulation boundary
//
// It owns the flat parameter, gradient and optimizer-state buffers (accounted by category in the
// allocator), scales each micro-batch's loss by 1/gradient_accumulation_steps as DeepSpeed does,
// clips by global gradient norm (gradient_clipping, PyTorch's clip_grad_norm_ rule), applies
// Adam/AdamW with DeepSpeed's adam_w_mode rule and runs the LR schedule once per optimizer step.
// With a data-parallel communicator of more than one rank it is ZeRO stage 0 (plain data
// parallelism): parameters are broadcast from rank 0 at initialisation, and at each step the
// gradients are averaged across ranks before clipping and the update, so every rank takes the
// same step. ZeRO partitioning comes in later stages. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/config/config.h"
#include "worker/engine/lr_schedule.h"
#include "worker/model/gpt.h"
#include "worker/tensor/tensor.h"

namespace dstrain::engine {

struct StepStats {
  int64_t step = 0;         // optimizer steps taken so far, this one included
  double loss = 0.0;        // mean loss over the micro-batches (and data-parallel ranks)
  double lr = 0.0;          // learning rate this step used
  double grad_norm = 0.0;   // global L2 norm of the gradients before clipping
  double clip_coef = 1.0;   // factor the gradients were multiplied by (1 = not clipped)
  double loss_scale = 1.0;  // fp32: always 1
  bool skipped = false;     // fp32: never
};

class Engine {
 public:
  // Allocates parameters (initialised from model.init_from or with init_seed), gradients and
  // optimizer state. Errors: kInvalidArgument for an init_from file that does not match the
  // model shape, kResourceExhausted when memory runs out.
  // `dp` (optional, not owned, outlives the engine) is the data-parallel group.
  static absl::StatusOr<std::unique_ptr<Engine>> Initialize(std::unique_ptr<model::Gpt> model,
                                                            const config::JobSpec& spec,
                                                            Allocator* allocator,
                                                            Communicator* dp = nullptr,
                                                            CommOptions comm_options = {});

  // Forward and fused loss backward of one training micro-batch (micro_batch × seq_len tokens).
  // Returns the micro-batch's mean loss (unscaled).
  absl::StatusOr<float> Forward(const int32_t* inputs, const int32_t* targets);
  // Accumulates this micro-batch's gradients.
  absl::Status Backward();
  // At the gradient-accumulation boundary: clip, optimizer update, LR schedule, zero gradients,
  // and returns the step's stats. Before the boundary returns std::nullopt (DeepSpeed's
  // engine.step() is likewise a no-op between boundaries).
  absl::StatusOr<std::optional<StepStats>> Step();

  // Forward only (no gradients) on a batch of B sequences of length T; returns the mean loss.
  absl::StatusOr<float> EvalLoss(const int32_t* inputs, const int32_t* targets, int B, int T);

  model::Gpt& model() { return *model_; }
  const float* params() const { return params_.data<float>(); }
  float* mutable_params() { return params_.data<float>(); }
  const float* grads() const { return grads_.data<float>(); }
  int64_t global_steps() const { return global_steps_; }
  int micro_steps_in_step() const { return micro_step_; }
  const config::JobSpec& spec() const { return spec_; }
  Allocator* allocator() const { return allocator_; }

 private:
  Engine(std::unique_ptr<model::Gpt> model, const config::JobSpec& spec, Allocator* allocator,
         Communicator* dp, std::unique_ptr<LrSchedule> schedule);
  // Averages `count` floats at `data` over the data-parallel ranks (no-op without a group).
  absl::Status AverageAcrossRanks(float* data, int64_t count);

  std::unique_ptr<model::Gpt> model_;
  config::JobSpec spec_;
  Allocator* allocator_;
  Communicator* dp_;          // null or size 1: single rank
  CommOptions comm_options_;  // timeout of every collective
  std::unique_ptr<LrSchedule> schedule_;
  Tensor params_;                // (total) fp32
  Tensor grads_;                 // (total) fp32
  Tensor exp_avg_, exp_avg_sq_;  // (total) fp32 Adam moments
  int64_t global_steps_ = 0;
  int micro_step_ = 0;     // micro-batches accumulated since the last optimizer step
  double loss_sum_ = 0.0;  // their losses
  bool forward_pending_ = false;
};

}  // namespace dstrain::engine
