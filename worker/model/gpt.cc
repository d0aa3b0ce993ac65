#include "worker/model/gpt.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/random/rng.h"
#include "common/status/status_macros.h"
#include "worker/model/llmc_format.h"

namespace dstrain::model {

using tensor::View;

absl::StatusOr<std::unique_ptr<Gpt>> Gpt::Create(const GptConfig& config, device::Ops* ops,
                                                 BlockRange range) {
  DT_ASSIGN_OR_RETURN(ParamLayout layout, ParamLayout::ForGpt(config, range));
  return std::unique_ptr<Gpt>(new Gpt(config, std::move(layout), ops, range));
}

Gpt::Gpt(const GptConfig& config, ParamLayout layout, device::Ops* ops, BlockRange range)
    : config_(config),
      range_(range),
      layout_(std::move(layout)),
      ops_(ops),
      acts_(kNumGptActivations) {
  for (int m = 0; m < static_cast<int>(layout_.modules().size()); ++m) {
    const ModuleSpec& spec = layout_.modules()[m];
    if (spec.owner == Owner::kEmbedding) embedding_module_ = m;
    if (spec.owner == Owner::kFinal) final_module_ = m;
    if (spec.owner == Owner::kBlock) block_modules_.push_back(m);
  }
}

absl::Status Gpt::ImportParams(const std::string& path, float* params) const {
  DT_ASSIGN_OR_RETURN(LlmcModel loaded, ReadLlmcModel(path));
  const GptConfig& lc = loaded.config;
  const GptConfig& mc = config_;
  if (lc.n_layer != mc.n_layer || lc.n_head != mc.n_head || lc.n_embd != mc.n_embd ||
      lc.vocab_size != mc.vocab_size || lc.padded_vocab_size != mc.padded_vocab_size ||
      lc.block_size != mc.block_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.init_from: ", path, " has shape L=", lc.n_layer, " NH=", lc.n_head, " C=", lc.n_embd,
        " V=", lc.vocab_size, " Vp=", lc.padded_vocab_size, " maxT=", lc.block_size,
        ", but the model block asks for L=", mc.n_layer, " NH=", mc.n_head, " C=", mc.n_embd,
        " V=", mc.vocab_size, " Vp=", mc.padded_vocab_size, " maxT=", mc.block_size));
  }
  // The file holds the whole model in its layout; this model (a slice) takes its parameters.
  const ParamLayout whole = *ParamLayout::ForGpt(config_);
  std::memset(params, 0, layout_.total() * sizeof(float));
  for (const ParamSpec& p : layout_.params()) {
    std::memcpy(params + p.offset, loaded.params.data() + whole.Find(p.name)->offset,
                p.numel * sizeof(float));
  }
  return absl::OkStatus();
}

void Gpt::InitParams(float* params, uint64_t seed) const {
  // The draws follow the whole model's parameter order, so a slice gets the values the whole
  // model would: initialise the whole layout and copy this slice's parameters out of it.
  if (range_.first != 0 || !range_.HasHead(config_.n_layer)) {
    const ParamLayout whole = *ParamLayout::ForGpt(config_);
    std::vector<float> all(whole.total());
    std::unique_ptr<Gpt>(new Gpt(config_, whole, ops_, {}))->InitParams(all.data(), seed);
    std::memset(params, 0, layout_.total() * sizeof(float));
    for (const ParamSpec& p : layout_.params()) {
      std::memcpy(params + p.offset, all.data() + whole.Find(p.name)->offset, p.numel * 4);
    }
    return;
  }
  std::memset(params, 0, layout_.total() * sizeof(float));
  Rng rng(seed);
  const double residual_std = 0.02 / std::sqrt(2.0 * config_.n_layer);
  for (const ParamSpec& p : layout_.params()) {
    float* w = params + p.offset;
    const std::string kind = kGptParams[p.row].name;
    if (kind == "ln1w" || kind == "ln2w" || kind == "lnfw") {
      for (int64_t i = 0; i < p.numel; ++i) w[i] = 1.f;
    } else if (p.shape.size() == 2) {
      const double std = (kind == "attprojw" || kind == "fcprojw") ? residual_std : 0.02;
      // Only the real vocabulary rows of wte are drawn; padded rows stay 0 (never looked up,
      // and their logits are masked out of the softmax).
      const int64_t n_init = kind == "wte" ? int64_t{config_.vocab_size} * p.shape[1] : p.numel;
      for (int64_t i = 0; i < n_init; ++i) w[i] = static_cast<float>(std * rng.Normal());
    }
    // Biases and LayerNorm biases stay 0.
  }
}

void Gpt::set_activation_plan(const ActivationPlan& plan) { plan_ = plan; }

absl::Status Gpt::Prepare(int B, int T) {
  if (B == B_ && T == T_ && plan_ == prepared_plan_) return absl::OkStatus();
  if (plan_.buffers < 1 || plan_.checkpoint_interval < 0) {
    return absl::InvalidArgumentError(absl::StrCat("activation plan: ", plan_.buffers,
                                                   " buffers, checkpoint interval ",
                                                   plan_.checkpoint_interval));
  }
  acts_.clear();
  acts_.resize(kNumGptActivations);
  B_ = T_ = 0;
  const int C = config_.n_embd, NH = config_.n_head;
  const DeviceSizes device{ops_->AttentionStateElements(B, T, C, NH),
                           ops_->AttentionScratchElements(B, T, C, NH)};
  for (int row = 0; row < kNumGptActivations; ++row) {
    const int copies = ActCopies(row, config_, range_, plan_);
    if (copies == 0) continue;
    const ActRow& r = kGptActivations[row];
    // Every row is (copies, B, T, width) (width 1 dropped), or (copies, n) when device-sized.
    std::vector<int64_t> shape = {copies};
    if (r.size == ActSize::kPerToken) {
      shape.push_back(B);
      shape.push_back(T);
      const int64_t width = Resolve(r.per_token, config_);
      if (width != 1) shape.push_back(width);
    } else {
      shape.push_back(ActElements(row, config_, B, T, device));
    }
    DT_ASSIGN_OR_RETURN(acts_[row], tensor::Tensor::Empty(ops_->allocator(), r.dtype, shape,
                                                          tensor::MemoryCategory::kActivations));
  }
  backward_ready_.assign(plan_.buffers, false);
  prepared_plan_ = plan_;
  B_ = B;
  T_ = T;
  return absl::OkStatus();
}

View Gpt::Act(int act, int layer, int buffer) const {
  const View all = acts_[act].view();
  const int blocks = range_.Count(config_.n_layer);
  const int i = layer - range_.first;
  const ActivationPlan& plan = prepared_plan_;
  switch (kGptActivations[act].owner) {
    case ActOwner::kBlock:
      // Under activation checkpointing a segment's blocks take the scratch sets in turn.
      return all[plan.checkpoint() ? i % plan.checkpoint_interval : buffer * blocks + i];
    case ActOwner::kBlockOutput: {
      if (!plan.checkpoint()) return all[buffer * blocks + i];
      // A segment's output is kept per buffer; the outputs inside it are scratch, after those.
      const int segment = i / plan.checkpoint_interval;
      if (SegmentEnd(layer)) return all[buffer * plan.Segments(blocks) + segment];
      return all[plan.buffers * plan.Segments(blocks) + i % plan.checkpoint_interval];
    }
    case ActOwner::kBackward:
      return all[0];
    default:
      return all[buffer];
  }
}

View Gpt::BlockInput(int layer, int buffer) const {
  return layer == range_.first ? Act(kEncoded, -1, buffer) : Act(kResidual3, layer - 1, buffer);
}

bool Gpt::SegmentEnd(int layer) const {
  const int k = prepared_plan_.checkpoint_interval;
  return k <= 1 || (layer - range_.first + 1) % k == 0 || layer == range_.End(config_.n_layer) - 1;
}

absl::Status Gpt::RecomputeSegment(ParamAccess& access, int last, int b) {
  const int k = prepared_plan_.checkpoint_interval;
  const int first = range_.first + (last - range_.first) / k * k;
  const absl::Time start = BeginRecompute();
  for (int l = first; l <= last; ++l) {
    const int module = block_modules_[l - range_.first];
    DT_ASSIGN_OR_RETURN(ModuleParams w, access.AcquireParams(module, Pass::kBackward));
    BlockCompute(w, l, b);
    DT_RETURN_IF_ERROR(access.ReleaseParams(module, Pass::kBackward));
  }
  if (prepared_plan_.synchronize) DT_RETURN_IF_ERROR(ops_->Synchronize());
  return EndRecompute(start);
}

absl::Time Gpt::BeginRecompute() {
  if (prepared_plan_.profile) (void)ops_->Synchronize();  // an error stays in status()
  return absl::Now();
}

absl::Status Gpt::EndRecompute(absl::Time start) {
  if (!prepared_plan_.profile) return ops_->status();
  DT_RETURN_IF_ERROR(ops_->Synchronize());
  recompute_seconds_ += absl::ToDoubleSeconds(absl::Now() - start);
  return absl::OkStatus();
}

View Gpt::stage_input(int buffer) const { return Act(kEncoded, -1, buffer); }
View Gpt::stage_output(int buffer) const {
  return Act(kResidual3, range_.End(config_.n_layer) - 1, buffer);
}
View Gpt::stage_output_grad() const { return Act(kDstream); }

absl::Status Gpt::CheckBatch(const int32_t* tokens, const int32_t* targets, int B, int T) const {
  if (B <= 0 || T <= 0 || T > config_.block_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch shape (", B, ", ", T, ") out of range; block_size is ", config_.block_size));
  }
  if (range_.Embeds() && tokens == nullptr) {
    return absl::InvalidArgumentError("the first stage needs the input tokens");
  }
  const int64_t BT = int64_t{B} * T;
  const int V = config_.vocab_size;
  for (int64_t i = 0; i < BT; ++i) {
    if ((tokens != nullptr && (tokens[i] < 0 || tokens[i] >= V)) ||
        (targets != nullptr && (targets[i] < 0 || targets[i] >= V))) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id at position ", i, " is outside the vocabulary [0, ", V, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<float> Gpt::Forward(ParamAccess& access, const Batch& batch,
                                   std::optional<LossGrad> grad, int buffer) {
  // A stage that neither embeds nor has the head reads no array: it cannot tell B and T.
  if (!batch.Has("tokens") && !batch.Has("targets")) {
    return absl::InvalidArgumentError("batch: the GPT reads 'tokens' and 'targets' (B, T) int32");
  }
  const int32_t* tokens = nullptr;
  const int32_t* targets = nullptr;
  std::vector<int64_t> shape;
  for (auto [name, out] :
       {std::make_pair("tokens", &tokens), std::make_pair("targets", &targets)}) {
    if (!batch.Has(name)) continue;
    DT_ASSIGN_OR_RETURN(const BatchTensor t, batch.Get(name, DType::kI32, 2));
    if (!shape.empty() && t.shape != shape) {
      return absl::InvalidArgumentError("batch: 'tokens' and 'targets' differ in shape");
    }
    shape = t.shape;
    *out = static_cast<const int32_t*>(t.data);
  }
  if (shape[0] > std::numeric_limits<int>::max() || shape[1] > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError("batch: 'tokens' is too large");
  }
  const int B = static_cast<int>(shape[0]), T = static_cast<int>(shape[1]);
  const float dloss = grad ? static_cast<float>(grad->scale / (static_cast<double>(B) * T *
                                                               static_cast<double>(grad->divisor)))
                           : 0.f;
  if (grad && targets == nullptr && range_.HasHead(config_.n_layer)) {
    return absl::InvalidArgumentError("batch: a training forward needs 'targets'");
  }
  return Forward(access, tokens, targets, B, T, dloss, buffer);
}

absl::StatusOr<float> Gpt::Forward(ParamAccess& access, const int32_t* tokens,
                                   const int32_t* targets, int B, int T, float dloss, int buffer) {
  DT_RETURN_IF_ERROR(CheckBatch(tokens, targets, B, T));
  DT_RETURN_IF_ERROR(Prepare(B, T));
  if (buffer < 0 || buffer >= prepared_plan_.buffers) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation buffer ", buffer, " of ", prepared_plan_.buffers));
  }
  backward_ready_[buffer] = false;
  if (range_.Embeds()) DT_RETURN_IF_ERROR(EmbedForward(access, tokens, buffer));
  for (int l = range_.first; l < range_.End(config_.n_layer); ++l) {
    DT_RETURN_IF_ERROR(BlockForward(access, l, buffer));
    if (prepared_plan_.synchronize && SegmentEnd(l)) DT_RETURN_IF_ERROR(ops_->Synchronize());
  }
  float loss = 0.f;
  if (range_.HasHead(config_.n_layer)) {
    DT_ASSIGN_OR_RETURN(loss, HeadForward(access, targets, dloss, buffer));
    backward_ready_[buffer] = targets != nullptr && dloss > 0.f;
  } else {
    backward_ready_[buffer] = dloss > 0.f;
  }
  DT_RETURN_IF_ERROR(ops_->status());
  return loss;
}

// Phase 1: embeddings. encoded (B,T,C) = wte[tokens] + wpe[0..T)
absl::Status Gpt::EmbedForward(ParamAccess& access, const int32_t* tokens, int buffer) {
  ops_->CopyFromHost(Act(kTokens, -1, buffer), tokens);
  DT_ASSIGN_OR_RETURN(ModuleParams emb, access.AcquireParams(embedding_module_, Pass::kForward));
  ops_->EncoderForward(Act(kEncoded, -1, buffer), Act(kTokens, -1, buffer), emb[kWte], emb[kWpe]);
  DT_RETURN_IF_ERROR(access.ReleaseParams(embedding_module_, Pass::kForward));
  return ops_->status();
}

// Phase 2: a transformer block, reading the residual stream the previous one left.
absl::Status Gpt::BlockForward(ParamAccess& access, int l, int buffer) {
  const int module = block_modules_[l - range_.first];
  DT_ASSIGN_OR_RETURN(ModuleParams w, access.AcquireParams(module, Pass::kForward));
  BlockCompute(w, l, buffer);
  DT_RETURN_IF_ERROR(access.ReleaseParams(module, Pass::kForward));
  return ops_->status();
}

void Gpt::BlockCompute(const ModuleParams& w, int l, int b) {
  device::Ops& ops = *ops_;
  const device::LinearOptions linear{matmul_};
  const View x = BlockInput(l, b);  // (B,T,C)
  const View residual2 = Act(kResidual2, l, b), residual3 = Act(kResidual3, l, b);
  ops.LayerNormForward(Act(kLn1, l, b), Act(kLn1Mean, l, b), Act(kLn1Rstd, l, b), x, w[kLn1w],
                       w[kLn1b]);
  ops.LinearForward(Act(kQkv, l, b), Act(kLn1, l, b), w[kQkvw], w[kQkvb], linear);
  ops.AttentionForward(Act(kAtty, l, b), Act(kAtt, l, b), Act(kQkv, l, b), config_.n_head);
  // attproj goes straight into residual2, then the skip connection is added in place.
  ops.LinearForward(residual2, Act(kAtty, l, b), w[kAttprojw], w[kAttprojb], linear);
  ops.AddInto(residual2, x);
  ops.LayerNormForward(Act(kLn2, l, b), Act(kLn2Mean, l, b), Act(kLn2Rstd, l, b), residual2,
                       w[kLn2w], w[kLn2b]);
  device::LinearOptions fc = linear;
  fc.output_gelu = Act(kFch, l, b);  // fch = ln2 · fcwᵀ + fcb, fch_gelu = gelu(fch)
  ops.LinearForward(Act(kFchGelu, l, b), Act(kLn2, l, b), w[kFcw], w[kFcb], fc);
  ops.LinearForward(residual3, Act(kFchGelu, l, b), w[kFcprojw], w[kFcprojb], linear);
  ops.AddInto(residual3, residual2);
}

// Phase 3: final LayerNorm, the tied LM head (logits (B,T,Vp) = lnf · wteᵀ) and the loss, with
// its backward fused in when training (the logits become dlogits).
absl::StatusOr<float> Gpt::HeadForward(ParamAccess& access, const int32_t* targets, float dloss,
                                       int b) {
  device::Ops& ops = *ops_;
  {
    DT_ASSIGN_OR_RETURN(ModuleParams fin, access.AcquireParams(final_module_, Pass::kForward));
    DT_ASSIGN_OR_RETURN(ModuleParams emb, access.AcquireParams(embedding_module_, Pass::kForward));
    ops.LayerNormForward(Act(kLnf, -1, b), Act(kLnfMean, -1, b), Act(kLnfRstd, -1, b),
                         stage_output(b), fin[kLnfw], fin[kLnfb]);
    ops.LinearForward(Act(kLogits, -1, b), Act(kLnf, -1, b), emb[kWte], View(), {matmul_});
    DT_RETURN_IF_ERROR(access.ReleaseParams(embedding_module_, Pass::kForward));
    DT_RETURN_IF_ERROR(access.ReleaseParams(final_module_, Pass::kForward));
  }
  if (targets == nullptr) return 0.f;
  ops.CopyFromHost(Act(kTargets, -1, b), targets);
  ops.CrossEntropy(Act(kLosses, -1, b), Act(kLogits, -1, b), Act(kTargets, -1, b),
                   config_.vocab_size, dloss);
  DT_ASSIGN_OR_RETURN(const double mean, ops.MeanLoss(Act(kLosses, -1, b)));
  return static_cast<float>(mean);
}

absl::Status Gpt::Backward(ParamAccess& access, int b) {
  if (b < 0 || b >= static_cast<int>(backward_ready_.size()) || !backward_ready_[b]) {
    return absl::FailedPreconditionError(
        "Backward needs a preceding training Forward (targets and dloss > 0)");
  }
  backward_ready_[b] = false;
  // The embedding's gradients stay acquired through the whole pass when this stage embeds: the
  // tied head adds to dwte first, the encoder backward last.
  ModuleGrads demb;
  if (range_.HasHead(config_.n_layer)) {
    DT_RETURN_IF_ERROR(HeadBackward(access, demb, b));
  }
  for (int l = range_.End(config_.n_layer) - 1; l >= range_.first; --l) {
    // Activation checkpointing with segments of several blocks: entering a segment from its
    // end, recompute all its blocks first (a segment of one block recomputes inside
    // BlockBackward, under the same acquisition of its parameters).
    if (prepared_plan_.checkpoint_interval > 1 && SegmentEnd(l)) {
      DT_RETURN_IF_ERROR(RecomputeSegment(access, l, b));
    }
    DT_RETURN_IF_ERROR(BlockBackward(access, l, b));
  }
  // Embeddings: dstream is now ∂loss/∂encoded.
  if (range_.Embeds()) {
    if (demb.views.empty()) {
      DT_ASSIGN_OR_RETURN(demb, access.AcquireGrads(embedding_module_));
      // No head on this stage wrote wte's gradient first: a fresh buffer starts from zero.
      if (demb.fresh) ops_->Fill(demb[kWte], 0.f);
    }
    ops_->EncoderBackward(demb[kWte], demb[kWpe], Act(kDstream), Act(kTokens, -1, b));
    DT_RETURN_IF_ERROR(access.ReleaseGrads(embedding_module_));
  }
  return ops_->status();
}

absl::Status Gpt::HeadBackward(ParamAccess& access, ModuleGrads& demb, int b) {
  device::Ops& ops = *ops_;
  DT_ASSIGN_OR_RETURN(demb, access.AcquireGrads(embedding_module_));
  DT_ASSIGN_OR_RETURN(ModuleParams fin, access.AcquireParams(final_module_, Pass::kBackward));
  DT_ASSIGN_OR_RETURN(ModuleParams emb, access.AcquireParams(embedding_module_, Pass::kBackward));
  DT_ASSIGN_OR_RETURN(ModuleGrads dfin, access.AcquireGrads(final_module_));
  // Head: dlnf = dlogits · wte; dwte += dlogitsᵀ · lnf. dlnf lands in dbtc.
  device::LinearOptions head{matmul_};
  head.overwrite_dweight = demb.fresh;
  ops.LinearBackward(Act(kDbtc), demb[kWte], View(), Act(kLogits, -1, b), Act(kLnf, -1, b),
                     emb[kWte], head);
  DT_RETURN_IF_ERROR(access.ReleaseParams(embedding_module_, Pass::kBackward));
  // Final LayerNorm: its input is the last residual stream; the stream gradient starts here.
  ops.Fill(Act(kDstream), 0.f);
  ops.LayerNormBackward(Act(kDstream), dfin[kLnfw], dfin[kLnfb], Act(kDbtc), stage_output(b),
                        fin[kLnfw], Act(kLnfMean, -1, b), Act(kLnfRstd, -1, b));
  DT_RETURN_IF_ERROR(access.ReleaseGrads(final_module_));
  DT_RETURN_IF_ERROR(access.ReleaseParams(final_module_, Pass::kBackward));
  if (!range_.Embeds()) {
    // A last stage that does not embed holds wte only for the head: its gradients are done.
    DT_RETURN_IF_ERROR(access.ReleaseGrads(embedding_module_));
    demb = ModuleGrads();
  }
  return ops.status();
}

// A block in reverse. dstream holds ∂loss/∂(block output); each LayerNorm backward adds its
// branch into dstream, which the skip connection carries unchanged.
absl::Status Gpt::BlockBackward(ParamAccess& access, int l, int b) {
  const int module = block_modules_[l - range_.first];
  device::Ops& ops = *ops_;
  DT_ASSIGN_OR_RETURN(ModuleParams w, access.AcquireParams(module, Pass::kBackward));
  // Activation checkpointing: the block's activations are recomputed from its kept input, by the
  // same operations on the same values as in the forward pass (so the gradients are bitwise
  // those without checkpointing).
  if (prepared_plan_.checkpoint_interval == 1) {
    const absl::Time start = BeginRecompute();
    BlockCompute(w, l, b);
    if (prepared_plan_.synchronize) DT_RETURN_IF_ERROR(ops_->Synchronize());
    DT_RETURN_IF_ERROR(EndRecompute(start));
  }
  DT_ASSIGN_OR_RETURN(ModuleGrads dw, access.AcquireGrads(module));
  // A fresh gradient buffer's matrix parts start unwritten: the products overwrite them.
  device::LinearOptions linear{matmul_};
  linear.overwrite_dweight = dw.fresh;
  const View x = BlockInput(l, b);
  const View dstream = Act(kDstream), dbtc = Act(kDbtc);

  // MLP branch: residual3 = residual2 + fcproj(gelu(fc(ln2(residual2)))). fcproj's backward
  // returns the gradient with respect to fch (through the GELU) in dfch.
  device::LinearOptions fcproj = linear;
  fcproj.input_gelu = Act(kFch, l, b);
  ops.LinearBackward(Act(kDfch), dw[kFcprojw], dw[kFcprojb], dstream, Act(kFchGelu, l, b),
                     w[kFcprojw], fcproj);
  ops.LinearBackward(dbtc, dw[kFcw], dw[kFcb], Act(kDfch), Act(kLn2, l, b), w[kFcw], linear);
  ops.LayerNormBackward(dstream, dw[kLn2w], dw[kLn2b], dbtc, Act(kResidual2, l, b), w[kLn2w],
                        Act(kLn2Mean, l, b), Act(kLn2Rstd, l, b));
  // Attention branch: residual2 = x + attproj(attn(qkv(ln1(x)))).
  ops.LinearBackward(dbtc, dw[kAttprojw], dw[kAttprojb], dstream, Act(kAtty, l, b), w[kAttprojw],
                     linear);
  ops.AttentionBackward(Act(kDqkv), Act(kAttScratch), dbtc, Act(kQkv, l, b), Act(kAtt, l, b),
                        config_.n_head);
  ops.LinearBackward(dbtc, dw[kQkvw], dw[kQkvb], Act(kDqkv), Act(kLn1, l, b), w[kQkvw], linear);
  ops.LayerNormBackward(dstream, dw[kLn1w], dw[kLn1b], dbtc, x, w[kLn1w], Act(kLn1Mean, l, b),
                        Act(kLn1Rstd, l, b));
  DT_RETURN_IF_ERROR(access.ReleaseGrads(module));
  DT_RETURN_IF_ERROR(access.ReleaseParams(module, Pass::kBackward));
  return ops.status();
}

absl::StatusOr<float> Gpt::Forward(View params, const int32_t* tokens, const int32_t* targets,
                                   int B, int T, float dloss, int buffer) {
  FlatParamAccess access(layout_, params);
  return Forward(access, tokens, targets, B, T, dloss, buffer);
}

absl::Status Gpt::Backward(View params, View grads) {
  FlatParamAccess access(layout_, params, grads);
  return Backward(access);
}

}  // namespace dstrain::model
