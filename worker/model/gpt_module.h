// The built-in GPT-2-shaped decoder as a dstrain::Module (worker/api/module.h): the same public
// interface a user's model implements, with hand-written forward and backward passes (llm.c
// style) against device::Ops, so the same phase functions run on the CPU and on a GPU.
//
//   tokens (B,T) → wte[tok] + wpe[t] → L × [x += attn(ln1(x)); x += mlp(ln2(x))] → lnf
//   → logits = lnf · wteᵀ (tied head, Vp columns) → cross-entropy over the first V columns.
//
//   auto module = GptModule::Create(config);                  // or a pipeline stage's blocks
//   auto model = api::ModuleModel::Create(std::move(*module), &ops);   // what the engine trains
//
// Pre-LayerNorm blocks, causal self-attention with a fused qkv projection, tanh-GELU MLP (4C).
// Every size comes from the size table (gpt_sizes.h); Declare declares its parameters in the
// table's layout (ParamLayout::ForGpt). The module reaches its parameters and gradients only
// through the Pass, one module at a time; it keeps its activations itself (per (B, T), from the
// device's allocator under MemoryCategory::kActivations, one set per micro-batch slot), which is
// what lets a pipeline stage receive its input into them and checkpointing recompute them.
//
// A module may run a slice of the blocks (a pipeline stage, gpt_sizes.h's BlockRange): the first
// stage embeds the tokens, the last applies the head and the loss; a stage that does not embed
// reads its input from stage_input(), one without the head leaves its output in stage_output()
// and takes the output's gradient in stage_output_grad() before Backward. With activation
// checkpointing it keeps only each segment's output and recomputes the rest of a segment's
// activations in its backward pass (gpt_sizes.h's ActivationPlan). model::Gpt (gpt.h) is the
// engine's face of it: the ModuleModel plus these extras.
//
// Not thread-safe: one forward/backward at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/api/module.h"
#include "worker/device/ops.h"
#include "worker/model/gpt_sizes.h"
#include "worker/model/param_layout.h"
#include "worker/tensor/tensor.h"

namespace dstrain::model {

class GptModule final : public dstrain::Module {
 public:
  // kInvalidArgument for a shape or range the size table refuses.
  static absl::StatusOr<std::unique_ptr<GptModule>> Create(const GptConfig& config,
                                                           BlockRange range = {});

  // dstrain::Module. Declare declares layout()'s modules and parameters, in its order (so the
  // engine's layout of them is layout(), offsets included).
  absl::Status Declare(dstrain::Declarer& declarer) override;
  // GPT-2 initialisation, deterministic from `seed`: N(0, 0.02) weights and embeddings, residual
  // projections (attprojw, fcprojw) N(0, 0.02/√(2L)), LayerNorm weights 1, biases 0, padded wte
  // rows 0. A slice of the model gets exactly the values the whole model's initialisation gives
  // those parameters. `layout` is layout().
  bool InitParams(const ParamLayout& layout, uint64_t seed, float* params) const override;
  // An llm.c model file (llmc_format.h) of this shape; a pipeline stage takes its slice.
  absl::Status ImportParams(const std::string& path, const ParamLayout& layout,
                            float* params) override;
  // The forward pass of a micro-batch: "tokens" (B, T) int32 on the first stage (ids below
  // vocab_size), "targets" (B, T) int32 on the last (absent: only the logits are produced and 0
  // is returned). A training forward fuses the cross-entropy's backward in on the last stage
  // (the logits become dlogits, with the mean loss's factor pass.LossGradOver(B·T)). Returns the
  // mean cross-entropy over the B·T tokens on the last stage, else 0. The micro-batch's
  // activations are held in slot pass.micro_batch_slot() (below the plan's buffers) until its
  // Backward. Errors: kInvalidArgument for a batch out of range (naming the array) or token ids
  // outside the vocabulary; the first failing device operation's error.
  absl::StatusOr<float> Forward(dstrain::Pass& pass, const dstrain::Batch& batch) override;
  // Accumulates (+=) the gradients of slot pass.micro_batch_slot()'s micro-batch.
  // kFailedPrecondition unless that slot's last Forward was a training one (on the last stage:
  // with targets).
  absl::Status Backward(dstrain::Pass& pass) override;

  const GptConfig& config() const { return config_; }
  BlockRange range() const { return range_; }
  // The size table's layout of this slice (ParamLayout::ForGpt), with each parameter's row.
  const ParamLayout& layout() const { return layout_; }

  // The device the activations live on: bound by the first Forward or by Bind (a pipeline stage
  // prepares its buffers before any pass). kFailedPrecondition for another device once bound.
  absl::Status Bind(device::Ops* ops);
  // How activations are held: buffers and checkpointing (takes effect at the next Prepare).
  void set_activation_plan(const ActivationPlan& plan) { plan_ = plan; }
  // The matrix products' operand type Prepare sizes the activations for until a pass says
  // otherwise (each Forward and Backward reads pass.matmul_precision()): bf16 products keep their
  // inputs in bf16 (ActivationPlan::bf16_matmul_inputs). Default kF32. A pass whose precision
  // changes those rows' dtype makes its Forward prepare the activations anew, so a pipeline stage
  // (whose input arrives before its Forward) sets it before Prepare (Gpt::set_matmul_precision).
  void set_matmul_precision(DType compute) { matmul_ = compute; }
  const ActivationPlan& activation_plan() const { return plan_; }
  // Allocates the activations for B × T micro-batches (Forward does so when the shape changes).
  // kFailedPrecondition before a device is bound.
  absl::Status Prepare(int B, int T);
  // Activations of a pipeline stage (valid after Prepare, until the shape changes), all (B,T,C):
  // where a stage that does not embed receives slot b's input, where the last block leaves its
  // output, and where a stage without the head receives the output's gradient before a Backward
  // (and, on one that does not embed, where Backward leaves the input's gradient; one for all
  // slots, so it is read before the next Backward).
  tensor::View stage_input(int buffer = 0) const { return Act(kEncoded, -1, buffer); }
  tensor::View stage_output(int buffer = 0) const;
  tensor::View stage_output_grad() const { return Act(kDstream); }
  // The logits of the last inference Forward in slot `buffer` (last stage): (B, T, Vp) on the
  // device.
  tensor::View logits(int buffer = 0) const { return Act(kLogits, -1, buffer); }
  // Per-token losses of the last Forward with targets: (B, T) on the device.
  tensor::View losses(int buffer = 0) const { return Act(kLosses, -1, buffer); }
  // Under activation_checkpointing.profile: seconds spent recomputing blocks so far (0 without).
  double recompute_seconds() const { return recompute_seconds_; }

 private:
  GptModule(const GptConfig& config, ParamLayout layout, BlockRange range);

  // Activation `act` (of block `layer` for per-block rows) of slot `buffer` as a (B, T, ·) view.
  tensor::View Act(int act, int layer = -1, int buffer = 0) const;
  // The residual stream into block `layer`.
  tensor::View BlockInput(int layer, int buffer) const;
  // Whether block `layer` ends its checkpoint segment (every block does without checkpointing).
  bool SegmentEnd(int layer) const;
  // The dtype Prepare gives the rows only matrix products read, for the products' precision and
  // plan now (ActDType).
  DType ProductInputDType() const;
  // Recomputes the blocks of the segment that ends at `last` (activation checkpointing).
  absl::Status RecomputeSegment(dstrain::Pass& pass, int last, int buffer);
  // Around a recomputation: under activation_checkpointing.profile, synchronise and time it.
  absl::Time BeginRecompute();
  absl::Status EndRecompute(absl::Time start);

  absl::Status CheckBatch(const int32_t* tokens, const int32_t* targets, int B, int T) const;
  absl::Status EmbedForward(dstrain::Pass& pass, const int32_t* tokens, int buffer);
  absl::Status BlockForward(dstrain::Pass& pass, int layer, int buffer);
  // Block `layer`'s forward computations with its parameters at hand (the forward pass, and the
  // recompute of activation checkpointing).
  void BlockCompute(const std::vector<tensor::View>& w, int layer, int buffer);
  absl::StatusOr<float> HeadForward(dstrain::Pass& pass, const int32_t* targets, float dloss,
                                    int buffer);
  // The head's backward; the embedding's gradients stay held (in `demb`) when the stage also
  // embeds (the encoder adds to wte's last).
  absl::Status HeadBackward(dstrain::Pass& pass, std::vector<tensor::View>& demb, int buffer);
  absl::Status BlockBackward(dstrain::Pass& pass, int layer, int buffer);

  GptConfig config_;
  BlockRange range_;
  ParamLayout layout_;
  device::Ops* ops_ = nullptr;  // bound by Bind or the first Forward
  // The pass's matmul_precision(), read at each Forward/Backward (set_matmul_precision before
  // the first); the activations keep the product inputs in prepared_inputs_.
  DType matmul_ = DType::kF32, prepared_inputs_ = DType::kF32;
  int embedding_module_ = -1, final_module_ = -1;  // -1 where this slice has none
  std::vector<int> block_modules_;                 // module of block range_.first + i
  ActivationPlan plan_, prepared_plan_;
  int B_ = 0, T_ = 0;
  std::vector<tensor::Tensor> acts_;  // one per kGptActivations row: (copies, ...) each
  std::vector<bool> backward_ready_;  // per slot
  double recompute_seconds_ = 0;
};

}  // namespace dstrain::model
