// A GPT-2-shaped decoder with hand-written forward and backward passes (llm.c style), written once
// against device::Ops, so the same phase functions run on the CPU and on a GPU.
//
//   tokens (B,T) → wte[tok] + wpe[t] → L × [x += attn(ln1(x)); x += mlp(ln2(x))] → lnf
//   → logits = lnf · wteᵀ (tied head, Vp columns) → cross-entropy over the first V columns.
//
// Pre-LayerNorm blocks, causal self-attention with a fused qkv projection, tanh-GELU MLP (4C).
// Every size comes from the size table (gpt_sizes.h). The model owns its activations (allocated
// per (B, T) through its device's allocator under MemoryCategory::kActivations) but not its
// parameters or gradients, which it reaches module by module through a ParamAccess (param_access.h)
// so that the engine, and ZeRO, decide where those live.
//
// A model may run a slice of the blocks (a pipeline stage, gpt_sizes.h's BlockRange): the first
// stage embeds the tokens, the last applies the head and the loss; a stage that does not embed
// reads its input from stage_input(), one without the head leaves its output in stage_output()
// and takes the output's gradient in stage_output_grad() before Backward. It may hold several
// micro-batches' activations at once (`buffers`: a pipeline stage's micro-batches in flight), and
// with activation checkpointing keeps only each block's output, recomputing the rest of a
// block's activations in its backward pass (gpt_sizes.h's ActivationPlan).
//
// Not thread-safe: one forward/backward at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/device/ops.h"
#include "worker/model/gpt_sizes.h"
#include "worker/model/model.h"
#include "worker/model/param_access.h"
#include "worker/model/param_layout.h"
#include "worker/tensor/tensor.h"

namespace dstrain::model {

class Gpt final : public Model {
 public:
  // `ops` (not owned) outlives the model; activations come from its allocator.
  static absl::StatusOr<std::unique_ptr<Gpt>> Create(const GptConfig& config, device::Ops* ops,
                                                     BlockRange range = {});

  const GptConfig& config() const { return config_; }
  BlockRange range() const { return range_; }
  const ParamLayout& layout() const override { return layout_; }
  device::Ops& ops() const override { return *ops_; }
  Gpt* AsGpt() override { return this; }

  // The operand type of every matrix product: kF32, or kBF16 (fp32 accumulation; bf16 mixed
  // precision). Default kF32.
  void set_matmul_precision(DType compute) override { matmul_ = compute; }
  DType matmul_precision() const { return matmul_; }

  // GPT-2 initialisation into a host buffer of layout().total() floats, deterministic from
  // `seed`: N(0, 0.02) weights and embeddings, residual projections (attprojw, fcprojw)
  // N(0, 0.02/√(2L)), LayerNorm weights 1, biases 0, padded wte rows 0. A slice of the model
  // gets exactly the values the whole model's initialisation gives those parameters.
  void InitParams(float* params, uint64_t seed) const override;
  // An llm.c model file (llmc_format.h) of this shape; a pipeline stage takes its slice.
  absl::Status ImportParams(const std::string& path, float* params) const override;

  // How activations are held: buffers and checkpointing (takes effect at the next Prepare).
  void set_activation_plan(const ActivationPlan& plan);
  const ActivationPlan& activation_plan() const { return plan_; }
  // Allocates the activations for B × T micro-batches (Forward does so when the shape changes).
  absl::Status Prepare(int B, int T);
  // Activations of a pipeline stage (valid after Prepare, until the shape changes), all (B,T,C):
  // where a stage that does not embed receives buffer b's input, where the last block leaves its
  // output, and where a stage without the head receives the output's gradient before a Backward
  // (and, on one that does not embed, where Backward leaves the input's gradient; one for all
  // buffers, so it is read before the next Backward).
  tensor::View stage_input(int buffer = 0) const;
  tensor::View stage_output(int buffer = 0) const;
  tensor::View stage_output_grad() const;

  // The forward pass of a micro-batch. tokens (B, T) (host memory, ids < vocab_size) are read on
  // the first stage, targets (B, T) (host) on the last; targets may be null (inference: only the
  // logits are produced and 0 is returned). dloss > 0 makes it a training forward: on the last
  // stage the backward of the cross-entropy is fused in (the logits become dlogits = dloss ·
  // ∂(Σ per-token losses)/∂logits; dloss = scale / (B·T) gives a mean loss times `scale`).
  // Returns the mean cross-entropy over the B·T tokens on the last stage, else 0.
  // Errors: kInvalidArgument for B, T out of range or token ids outside the vocabulary; the
  // first failing device operation's error.
  // `buffer` (< the plan's buffers) holds this micro-batch's activations until its Backward.
  absl::StatusOr<float> Forward(ParamAccess& access, const int32_t* tokens, const int32_t* targets,
                                int B, int T, float dloss = 0.f, int buffer = 0);
  // Accumulates (+=) the gradients of buffer `buffer`'s micro-batch into the gradient buffers.
  // REQUIRES: that buffer's last Forward was a training one (on the last stage: with targets).
  absl::Status Backward(ParamAccess& access, int buffer = 0) override;

  // Model's forward: "tokens" (B, T) int32 (the first stage), "targets" (B, T) int32 (the last
  // stage; absent: logits only). A training forward's dloss is grad.scale / (B·T·grad.divisor):
  // the mean loss's gradient, scaled.
  absl::StatusOr<float> Forward(ParamAccess& access, const Batch& batch,
                                std::optional<LossGrad> grad, int buffer = 0) override;

  // The same over one flat f32 buffer of layout().total() parameters (and gradients) on the
  // model's device.
  absl::StatusOr<float> Forward(tensor::View params, const int32_t* tokens, const int32_t* targets,
                                int B, int T, float dloss = 0.f, int buffer = 0);
  absl::Status Backward(tensor::View params, tensor::View grads);

  // The logits of the last inference Forward into `buffer` (last stage): (B, T, Vp) on the
  // device.
  tensor::View logits(int buffer = 0) const { return Act(kLogits, -1, buffer); }
  // Per-token losses of the last Forward with targets: (B, T) on the device.
  tensor::View losses(int buffer = 0) const { return Act(kLosses, -1, buffer); }

  // Under activation_checkpointing.profile: seconds spent recomputing blocks so far (0 without).
  double recompute_seconds() const { return recompute_seconds_; }

 private:
  Gpt(const GptConfig& config, ParamLayout layout, device::Ops* ops, BlockRange range);

  // Activation `act` (of block `layer` for per-block rows) of buffer `buffer` as a (B, T, ·)
  // view.
  tensor::View Act(int act, int layer = -1, int buffer = 0) const;
  // The residual stream into block `layer`.
  tensor::View BlockInput(int layer, int buffer) const;
  // Whether block `layer` ends its checkpoint segment (every block does without checkpointing).
  bool SegmentEnd(int layer) const;
  // Recomputes the blocks of the segment that ends at `last` (activation checkpointing).
  absl::Status RecomputeSegment(ParamAccess& access, int last, int buffer);
  // Around a recomputation: under activation_checkpointing.profile, synchronise and time it.
  absl::Time BeginRecompute();
  absl::Status EndRecompute(absl::Time start);

  absl::Status CheckBatch(const int32_t* tokens, const int32_t* targets, int B, int T) const;
  absl::Status EmbedForward(ParamAccess& access, const int32_t* tokens, int buffer);
  absl::Status BlockForward(ParamAccess& access, int layer, int buffer);
  // Block `layer`'s forward computations with its parameters at hand (the forward pass, and the
  // recompute of activation checkpointing).
  void BlockCompute(const ModuleParams& w, int layer, int buffer);
  absl::StatusOr<float> HeadForward(ParamAccess& access, const int32_t* targets, float dloss,
                                    int buffer);
  // The head's backward; the embedding's gradients stay acquired in `demb` when the stage also
  // embeds (the encoder adds to wte's last).
  absl::Status HeadBackward(ParamAccess& access, ModuleGrads& demb, int buffer);
  absl::Status BlockBackward(ParamAccess& access, int layer, int buffer);

  GptConfig config_;
  BlockRange range_;
  ParamLayout layout_;
  device::Ops* ops_;
  DType matmul_ = DType::kF32;
  int embedding_module_ = -1, final_module_ = -1;  // -1 where this slice has none
  std::vector<int> block_modules_;                 // module of block range_.first + i
  ActivationPlan plan_, prepared_plan_;
  int B_ = 0, T_ = 0;
  std::vector<tensor::Tensor> acts_;  // one per kGptActivations row: (copies, ...) each
  std::vector<bool> backward_ready_;  // per buffer
  double recompute_seconds_ = 0;
};

}  // namespace dstrain::model
