// The built-in GPT as the engine trains it: its dstrain::Module (gpt_module.h, on the library's
// public interface) made a model::Model by api::ModuleModel, the same adapter that trains a user's
// module or the Llama, plus what only the GPT has (Model::AsGpt): pipeline stages and their
// activation buffers, llm.c's files, the logits for sampling, activation checkpointing.
//
//   auto gpt = model::Gpt::Create(config, &ops);          // or a pipeline stage's BlockRange
//   engine::Engine::Initialize(**gpt, spec);              // trains it through the Module's Pass
//
// Every forward and backward pass goes through the ModuleModel (its Pass over the engine's
// ParamAccess); the entry points below with token pointers and a dloss build the Batch and the
// LossGrad that stand for them. Not thread-safe: one forward/backward at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "worker/api/module_model.h"
#include "worker/device/ops.h"
#include "worker/model/gpt_module.h"
#include "worker/model/gpt_sizes.h"
#include "worker/model/model.h"
#include "worker/model/param_access.h"
#include "worker/model/param_layout.h"
#include "worker/tensor/view.h"

namespace dstrain::model {

class Gpt final : public Model {
 public:
  // `ops` (not owned) outlives the model; activations come from its allocator. kInvalidArgument
  // for a shape the size table refuses; kInternal if the module's declarations did not lay out
  // as the size table does.
  static absl::StatusOr<std::unique_ptr<Gpt>> Create(const GptConfig& config, device::Ops* ops,
                                                     BlockRange range = {});

  const GptConfig& config() const { return module_->config(); }
  BlockRange range() const { return module_->range(); }
  // The size table's layout (offsets as the module's declarations lay them out, with each
  // parameter's row and owner).
  const ParamLayout& layout() const override { return module_->layout(); }
  device::Ops& ops() const override { return model_->ops(); }
  Gpt* AsGpt() override { return this; }
  // The module and its adapter (what a pass goes through).
  GptModule& module() { return *module_; }
  api::ModuleModel& module_model() { return *model_; }

  // The operand type of every matrix product: kF32, or kBF16 (fp32 accumulation; bf16 mixed
  // precision). Default kF32.
  void set_matmul_precision(DType compute) override {
    model_->set_matmul_precision(compute);
    module_->set_matmul_precision(compute);  // for a Prepare before the first pass
  }
  DType matmul_precision() const { return model_->matmul_precision(); }
  // GptModule::InitParams (GPT-2's initialisation) and ImportParams (llm.c's files).
  void InitParams(float* params, uint64_t seed) const override { model_->InitParams(params, seed); }
  absl::Status ImportParams(const std::string& path, float* params) const override {
    return model_->ImportParams(path, params);
  }

  // GptModule's activation plan, buffers and stage views (gpt_module.h).
  void set_activation_plan(const ActivationPlan& plan) { module_->set_activation_plan(plan); }
  const ActivationPlan& activation_plan() const { return module_->activation_plan(); }
  absl::Status Prepare(int B, int T) { return module_->Prepare(B, T); }
  tensor::View stage_input(int buffer = 0) const { return module_->stage_input(buffer); }
  tensor::View stage_output(int buffer = 0) const { return module_->stage_output(buffer); }
  tensor::View stage_output_grad() const { return module_->stage_output_grad(); }
  tensor::View logits(int buffer = 0) const { return module_->logits(buffer); }
  tensor::View losses(int buffer = 0) const { return module_->losses(buffer); }
  double recompute_seconds() const { return module_->recompute_seconds(); }

  // Model's passes: "tokens" (B, T) int32 on the first stage, "targets" (B, T) int32 on the last
  // (absent: logits only); a training forward's dloss is grad.scale / (B·T·grad.divisor), the
  // mean loss's gradient, scaled (GptModule::Forward).
  absl::StatusOr<float> Forward(ParamAccess& access, const Batch& batch,
                                std::optional<LossGrad> grad, int buffer = 0) override {
    return model_->Forward(access, batch, grad, buffer);
  }
  absl::Status Backward(ParamAccess& access, int buffer = 0) override {
    return model_->Backward(access, buffer);
  }

  // The same with host token pointers (null where the stage reads none) and the gradient factor
  // itself: dloss > 0 makes it a training forward whose cross-entropy backward is multiplied by
  // dloss (1/(B·T) for a mean loss); 0, an evaluation. kInvalidArgument for B, T out of range or
  // token ids outside the vocabulary.
  absl::StatusOr<float> Forward(ParamAccess& access, const int32_t* tokens, const int32_t* targets,
                                int B, int T, float dloss = 0.f, int buffer = 0);
  // Over one flat f32 buffer of layout().total() parameters (and gradients) on the device.
  absl::StatusOr<float> Forward(tensor::View params, const int32_t* tokens, const int32_t* targets,
                                int B, int T, float dloss = 0.f, int buffer = 0);
  absl::Status Backward(tensor::View params, tensor::View grads);

 private:
  Gpt(GptModule* module, std::unique_ptr<api::ModuleModel> model)
      : module_(module), model_(std::move(model)) {}

  GptModule* module_;  // owned by model_
  std::unique_ptr<api::ModuleModel> model_;
};

}  // namespace dstrain::model
