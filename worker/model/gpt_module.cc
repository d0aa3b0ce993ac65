#include "worker/model/gpt_module.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/random/rng.h"
#include "common/status/status_macros.h"
#include "worker/model/llmc_format.h"

namespace dstrain::model {

using tensor::View;

absl::StatusOr<std::unique_ptr<GptModule>> GptModule::Create(const GptConfig& config,
                                                             BlockRange range) {
  DT_ASSIGN_OR_RETURN(ParamLayout layout, ParamLayout::ForGpt(config, range));
  return std::unique_ptr<GptModule>(new GptModule(config, std::move(layout), range));
}

GptModule::GptModule(const GptConfig& config, ParamLayout layout, BlockRange range)
    : config_(config), range_(range), layout_(std::move(layout)), acts_(kNumGptActivations) {
  for (int m = 0; m < static_cast<int>(layout_.modules().size()); ++m) {
    const ModuleSpec& spec = layout_.modules()[m];
    if (spec.owner == Owner::kEmbedding) embedding_module_ = m;
    if (spec.owner == Owner::kFinal) final_module_ = m;
    if (spec.owner == Owner::kBlock) block_modules_.push_back(m);
  }
}

absl::Status GptModule::Declare(dstrain::Declarer& declarer) {
  const double residual_std = 0.02 / std::sqrt(2.0 * config_.n_layer);
  for (const ModuleSpec& m : layout_.modules()) {
    declarer.BeginModule(m.name);
    for (int i : m.params) {
      const ParamSpec& p = layout_.params()[i];
      // What InitParams draws, for the record (it draws them itself, in GPT-2's one sequence).
      const std::string kind = kGptParams[p.row].name;
      dstrain::Init init = dstrain::Init::Zeros();
      if (kind == "ln1w" || kind == "ln2w" || kind == "lnfw") {
        init = dstrain::Init::Ones();
      } else if (p.shape.size() == 2) {
        init = dstrain::Init::Normal(kind == "attprojw" || kind == "fcprojw" ? residual_std : 0.02);
      }
      declarer.Add(p.name, p.shape, init, p.matrix);
    }
  }
  return absl::OkStatus();
}

absl::Status GptModule::ImportParams(const std::string& path, const ParamLayout& layout,
                                     float* params) {
  (void)layout;  // layout(), which Declare declares
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

bool GptModule::InitParams(const ParamLayout& layout, uint64_t seed, float* params) const {
  (void)layout;  // layout(), which Declare declares
  // The draws follow the whole model's parameter order, so a slice gets the values the whole
  // model would: initialise the whole layout and copy this slice's parameters out of it.
  if (range_.first != 0 || !range_.HasHead(config_.n_layer)) {
    const ParamLayout whole = *ParamLayout::ForGpt(config_);
    std::vector<float> all(whole.total());
    GptModule(config_, whole, {}).InitParams(whole, seed, all.data());
    std::memset(params, 0, layout_.total() * sizeof(float));
    for (const ParamSpec& p : layout_.params()) {
      std::memcpy(params + p.offset, all.data() + whole.Find(p.name)->offset, p.numel * 4);
    }
    return true;
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
  return true;
}

absl::Status GptModule::Bind(device::Ops* ops) {
  if (ops_ != nullptr && ops_ != ops) {
    return absl::FailedPreconditionError(
        "the GPT module keeps its activations on another device than this pass's");
  }
  ops_ = ops;
  return absl::OkStatus();
}

absl::Status GptModule::Prepare(int B, int T) {
  if (ops_ == nullptr) return absl::FailedPreconditionError("GptModule::Prepare: no device bound");
  if (B == B_ && T == T_ && plan_ == prepared_plan_ && ProductInputDType() == prepared_inputs_) {
    return absl::OkStatus();
  }
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
                           ops_->AttentionScratchElements(B, T, C, NH), ops_->bf16_matmul_inputs()};
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
    DT_ASSIGN_OR_RETURN(
        acts_[row], tensor::Tensor::Empty(ops_->allocator(), ActDType(row, plan_, matmul_, device),
                                          shape, tensor::MemoryCategory::kActivations));
  }
  backward_ready_.assign(plan_.buffers, false);
  prepared_plan_ = plan_;
  prepared_inputs_ = ProductInputDType();
  B_ = B;
  T_ = T;
  return absl::OkStatus();
}

DType GptModule::ProductInputDType() const {
  DeviceSizes device;
  device.bf16_matmul_inputs = ops_->bf16_matmul_inputs();
  return ActDType(kLn1, plan_, matmul_, device);
}

View GptModule::Act(int act, int layer, int buffer) const {
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

View GptModule::BlockInput(int layer, int buffer) const {
  return layer == range_.first ? Act(kEncoded, -1, buffer) : Act(kResidual3, layer - 1, buffer);
}

bool GptModule::SegmentEnd(int layer) const {
  const int k = prepared_plan_.checkpoint_interval;
  return k <= 1 || (layer - range_.first + 1) % k == 0 || layer == range_.End(config_.n_layer) - 1;
}

absl::Status GptModule::RecomputeSegment(dstrain::Pass& pass, int last, int b) {
  const int k = prepared_plan_.checkpoint_interval;
  const int first = range_.first + (last - range_.first) / k * k;
  const absl::Time start = BeginRecompute();
  for (int l = first; l <= last; ++l) {
    const int module = block_modules_[l - range_.first];
    DT_ASSIGN_OR_RETURN(const std::vector<View> w, pass.Params(module));
    BlockCompute(w, l, b);
    DT_RETURN_IF_ERROR(pass.Release(module));
  }
  if (prepared_plan_.synchronize) DT_RETURN_IF_ERROR(ops_->Synchronize());
  return EndRecompute(start);
}

absl::Time GptModule::BeginRecompute() {
  if (prepared_plan_.profile) (void)ops_->Synchronize();  // an error stays in status()
  return absl::Now();
}

absl::Status GptModule::EndRecompute(absl::Time start) {
  if (!prepared_plan_.profile) return ops_->status();
  DT_RETURN_IF_ERROR(ops_->Synchronize());
  recompute_seconds_ += absl::ToDoubleSeconds(absl::Now() - start);
  return absl::OkStatus();
}

View GptModule::stage_output(int buffer) const {
  return Act(kResidual3, range_.End(config_.n_layer) - 1, buffer);
}

absl::Status GptModule::CheckBatch(const int32_t* tokens, const int32_t* targets, int B,
                                   int T) const {
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

absl::StatusOr<float> GptModule::Forward(dstrain::Pass& pass, const Batch& batch) {
  DT_RETURN_IF_ERROR(Bind(&pass.ops()));
  matmul_ = pass.matmul_precision();
  // A stage that neither embeds nor has the head reads no array: its micro-batch is the shape
  // its activations were prepared for (a pipeline stage prepares them before receiving input).
  const bool reads_arrays = range_.Embeds() || range_.HasHead(config_.n_layer);
  if (!batch.Has("tokens") && !batch.Has("targets") && (reads_arrays || B_ == 0)) {
    return absl::InvalidArgumentError(
        reads_arrays ? "batch: the GPT reads 'tokens' and 'targets' (B, T) int32"
                     : "batch: a pipeline stage between the first and the last reads no array; "
                       "Prepare(B, T) its activations first");
  }
  const int32_t* tokens = nullptr;
  const int32_t* targets = nullptr;
  std::vector<int64_t> shape = {B_, T_};
  bool shaped = false;
  for (auto [name, out] :
       {std::make_pair("tokens", &tokens), std::make_pair("targets", &targets)}) {
    if (!batch.Has(name)) continue;
    DT_ASSIGN_OR_RETURN(const BatchTensor t, batch.Get(name, DType::kI32, 2));
    if (shaped && t.shape != shape) {
      return absl::InvalidArgumentError("batch: 'tokens' and 'targets' differ in shape");
    }
    shape = t.shape;
    shaped = true;
    *out = static_cast<const int32_t*>(t.data);
  }
  if (shape[0] > std::numeric_limits<int>::max() || shape[1] > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError("batch: 'tokens' is too large");
  }
  const int B = static_cast<int>(shape[0]), T = static_cast<int>(shape[1]);
  // The mean loss's gradient, scaled, rounded once: scale / (B·T·gradient_accumulation_steps).
  const float dloss =
      pass.training() ? static_cast<float>(pass.LossGradOver(static_cast<double>(B) * T)) : 0.f;
  if (pass.training() && targets == nullptr && range_.HasHead(config_.n_layer)) {
    return absl::InvalidArgumentError("batch: a training forward needs 'targets'");
  }
  const int buffer = pass.micro_batch_slot();
  DT_RETURN_IF_ERROR(CheckBatch(tokens, targets, B, T));
  DT_RETURN_IF_ERROR(Prepare(B, T));
  if (buffer < 0 || buffer >= prepared_plan_.buffers) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation buffer ", buffer, " of ", prepared_plan_.buffers));
  }
  backward_ready_[buffer] = false;
  if (range_.Embeds()) DT_RETURN_IF_ERROR(EmbedForward(pass, tokens, buffer));
  for (int l = range_.first; l < range_.End(config_.n_layer); ++l) {
    DT_RETURN_IF_ERROR(BlockForward(pass, l, buffer));
    if (prepared_plan_.synchronize && SegmentEnd(l)) DT_RETURN_IF_ERROR(ops_->Synchronize());
  }
  float loss = 0.f;
  if (range_.HasHead(config_.n_layer)) {
    DT_ASSIGN_OR_RETURN(loss, HeadForward(pass, targets, dloss, buffer));
    backward_ready_[buffer] = targets != nullptr && dloss > 0.f;
  } else {
    backward_ready_[buffer] = dloss > 0.f;
  }
  DT_RETURN_IF_ERROR(ops_->status());
  return loss;
}

// Phase 1: embeddings. encoded (B,T,C) = wte[tokens] + wpe[0..T)
absl::Status GptModule::EmbedForward(dstrain::Pass& pass, const int32_t* tokens, int buffer) {
  ops_->CopyFromHost(Act(kTokens, -1, buffer), tokens);
  DT_ASSIGN_OR_RETURN(const std::vector<View> emb, pass.Params(embedding_module_));
  ops_->EncoderForward(Act(kEncoded, -1, buffer), Act(kTokens, -1, buffer), emb[kWte], emb[kWpe]);
  DT_RETURN_IF_ERROR(pass.Release(embedding_module_));
  return ops_->status();
}

// Phase 2: a transformer block, reading the residual stream the previous one left.
absl::Status GptModule::BlockForward(dstrain::Pass& pass, int l, int buffer) {
  const int module = block_modules_[l - range_.first];
  DT_ASSIGN_OR_RETURN(const std::vector<View> w, pass.Params(module));
  BlockCompute(w, l, buffer);
  DT_RETURN_IF_ERROR(pass.Release(module));
  return ops_->status();
}

void GptModule::BlockCompute(const std::vector<View>& w, int l, int b) {
  device::Ops& ops = *ops_;
  const device::LinearOptions linear{matmul_};
  const View x = BlockInput(l, b);  // (B,T,C)
  const View residual2 = Act(kResidual2, l, b), residual3 = Act(kResidual3, l, b);
  ops.LayerNormForward(Act(kLn1, l, b), Act(kLn1Mean, l, b), Act(kLn1Rstd, l, b), x, w[kLn1w],
                       w[kLn1b]);
  ops.LinearForward(Act(kQkv, l, b), Act(kLn1, l, b), w[kQkvw], w[kQkvb], linear);
  ops.AttentionForward(Act(kAtty, l, b), Act(kAtt, l, b), Act(kQkv, l, b), config_.n_head, matmul_);
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
absl::StatusOr<float> GptModule::HeadForward(dstrain::Pass& pass, const int32_t* targets,
                                             float dloss, int b) {
  device::Ops& ops = *ops_;
  {
    DT_ASSIGN_OR_RETURN(const std::vector<View> fin, pass.Params(final_module_));
    DT_ASSIGN_OR_RETURN(const std::vector<View> emb, pass.Params(embedding_module_));
    ops.LayerNormForward(Act(kLnf, -1, b), Act(kLnfMean, -1, b), Act(kLnfRstd, -1, b),
                         stage_output(b), fin[kLnfw], fin[kLnfb]);
    ops.LinearForward(Act(kLogits, -1, b), Act(kLnf, -1, b), emb[kWte], View(), {matmul_});
    DT_RETURN_IF_ERROR(pass.Release(embedding_module_));
    DT_RETURN_IF_ERROR(pass.Release(final_module_));
  }
  if (targets == nullptr) return 0.f;
  ops.CopyFromHost(Act(kTargets, -1, b), targets);
  ops.CrossEntropy(Act(kLosses, -1, b), Act(kLogits, -1, b), Act(kTargets, -1, b),
                   config_.vocab_size, dloss);
  DT_ASSIGN_OR_RETURN(const double mean, ops.MeanLoss(Act(kLosses, -1, b)));
  return static_cast<float>(mean);
}

absl::Status GptModule::Backward(dstrain::Pass& pass) {
  DT_RETURN_IF_ERROR(Bind(&pass.ops()));
  matmul_ = pass.matmul_precision();
  const int b = pass.micro_batch_slot();
  if (b < 0 || b >= static_cast<int>(backward_ready_.size()) || !backward_ready_[b]) {
    return absl::FailedPreconditionError(
        "Backward needs a preceding training Forward (targets and dloss > 0)");
  }
  backward_ready_[b] = false;
  // The embedding's gradients stay held through the whole pass when this stage embeds: the tied
  // head adds to dwte first, the encoder backward last.
  std::vector<View> demb;
  if (range_.HasHead(config_.n_layer)) {
    DT_RETURN_IF_ERROR(HeadBackward(pass, demb, b));
  }
  for (int l = range_.End(config_.n_layer) - 1; l >= range_.first; --l) {
    // Activation checkpointing with segments of several blocks: entering a segment from its
    // end, recompute all its blocks first (a segment of one block recomputes inside
    // BlockBackward, under the same acquisition of its parameters).
    if (prepared_plan_.checkpoint_interval > 1 && SegmentEnd(l)) {
      DT_RETURN_IF_ERROR(RecomputeSegment(pass, l, b));
    }
    DT_RETURN_IF_ERROR(BlockBackward(pass, l, b));
  }
  // Embeddings: dstream is now ∂loss/∂encoded.
  if (range_.Embeds()) {
    if (demb.empty()) {
      bool fresh = false;
      DT_ASSIGN_OR_RETURN(demb, pass.GradsForOverwrite(embedding_module_, &fresh));
      // No head on this stage wrote wte's gradient first: a fresh buffer starts from zero.
      if (fresh) ops_->Fill(demb[kWte], 0.f);
    }
    ops_->EncoderBackward(demb[kWte], demb[kWpe], Act(kDstream), Act(kTokens, -1, b));
    DT_RETURN_IF_ERROR(pass.Release(embedding_module_));
  }
  return ops_->status();
}

absl::Status GptModule::HeadBackward(dstrain::Pass& pass, std::vector<View>& demb, int b) {
  device::Ops& ops = *ops_;
  bool demb_fresh = false, dfin_fresh = false;
  DT_ASSIGN_OR_RETURN(demb, pass.GradsForOverwrite(embedding_module_, &demb_fresh));
  DT_ASSIGN_OR_RETURN(const std::vector<View> fin, pass.Params(final_module_));
  DT_ASSIGN_OR_RETURN(const std::vector<View> emb, pass.Params(embedding_module_));
  // The final module has no matrix: its gradients are never left unwritten.
  DT_ASSIGN_OR_RETURN(const std::vector<View> dfin,
                      pass.GradsForOverwrite(final_module_, &dfin_fresh));
  // Head: dlnf = dlogits · wte; dwte += dlogitsᵀ · lnf. dlnf lands in dbtc.
  device::LinearOptions head{matmul_};
  head.overwrite_dweight = demb_fresh;
  ops.LinearBackward(Act(kDbtc), demb[kWte], View(), Act(kLogits, -1, b), Act(kLnf, -1, b),
                     emb[kWte], head);
  DT_RETURN_IF_ERROR(pass.ReleaseParams(embedding_module_));
  // Final LayerNorm: its input is the last residual stream; the stream gradient starts here.
  ops.Fill(Act(kDstream), 0.f);
  ops.LayerNormBackward(Act(kDstream), dfin[kLnfw], dfin[kLnfb], Act(kDbtc), stage_output(b),
                        fin[kLnfw], Act(kLnfMean, -1, b), Act(kLnfRstd, -1, b));
  DT_RETURN_IF_ERROR(pass.Release(final_module_));
  if (!range_.Embeds()) {
    // A last stage that does not embed holds wte only for the head: its gradients are done.
    DT_RETURN_IF_ERROR(pass.Release(embedding_module_));
    demb.clear();
  }
  return ops.status();
}

// A block in reverse. dstream holds ∂loss/∂(block output); each LayerNorm backward adds its
// branch into dstream, which the skip connection carries unchanged.
absl::Status GptModule::BlockBackward(dstrain::Pass& pass, int l, int b) {
  const int module = block_modules_[l - range_.first];
  device::Ops& ops = *ops_;
  DT_ASSIGN_OR_RETURN(const std::vector<View> w, pass.Params(module));
  // Activation checkpointing: the block's activations are recomputed from its kept input, by the
  // same operations on the same values as in the forward pass (so the gradients are bitwise
  // those without checkpointing).
  if (prepared_plan_.checkpoint_interval == 1) {
    const absl::Time start = BeginRecompute();
    BlockCompute(w, l, b);
    if (prepared_plan_.synchronize) DT_RETURN_IF_ERROR(ops_->Synchronize());
    DT_RETURN_IF_ERROR(EndRecompute(start));
  }
  bool fresh = false;
  DT_ASSIGN_OR_RETURN(const std::vector<View> dw, pass.GradsForOverwrite(module, &fresh));
  // A fresh gradient buffer's matrix parts start unwritten: the products overwrite them.
  device::LinearOptions linear{matmul_};
  linear.overwrite_dweight = fresh;
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
                        config_.n_head, matmul_);
  ops.LinearBackward(dbtc, dw[kQkvw], dw[kQkvb], Act(kDqkv), Act(kLn1, l, b), w[kQkvw], linear);
  ops.LayerNormBackward(dstream, dw[kLn1w], dw[kLn1b], dbtc, x, w[kLn1w], Act(kLn1Mean, l, b),
                        Act(kLn1Rstd, l, b));
  DT_RETURN_IF_ERROR(pass.Release(module));
  return ops.status();
}

}  // namespace dstrain::model
