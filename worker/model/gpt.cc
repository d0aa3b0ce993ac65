#include "worker/model/gpt.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/random/rng.h"
#include "common/status/status_macros.h"
#include "kernels/attention/attention.h"
#include "kernels/cast/cast.h"
#include "kernels/crossentropy/crossentropy.h"
#include "kernels/encoder/encoder.h"
#include "kernels/gelu/gelu.h"
#include "kernels/layernorm/layernorm.h"
#include "kernels/matmul/matmul.h"
#include "kernels/residual/residual.h"

namespace dstrain::model {

namespace k = ::dstrain::kernels;

absl::StatusOr<std::unique_ptr<Gpt>> Gpt::Create(const GptConfig& config,
                                                 tensor::Allocator* allocator) {
  DT_ASSIGN_OR_RETURN(ParamLayout layout, ParamLayout::ForGpt(config));
  return std::unique_ptr<Gpt>(new Gpt(config, std::move(layout), allocator));
}

Gpt::Gpt(const GptConfig& config, ParamLayout layout, tensor::Allocator* allocator)
    : config_(config),
      layout_(std::move(layout)),
      offsets_(OffsetsOf(layout_, config.n_layer)),
      allocator_(allocator) {
  embedding_module_ = layout_.Find("wte")->module;
  final_module_ = layout_.Find("lnfw")->module;
  for (int l = 0; l < config.n_layer; ++l) {
    block_modules_.push_back(layout_.Find(absl::StrCat("block.", l, ".ln1w"))->module);
  }
}

void Gpt::InitParams(float* params, uint64_t seed) const {
  std::memset(params, 0, layout_.total() * sizeof(float));
  Rng rng(seed);
  const double residual_std = 0.02 / std::sqrt(2.0 * config_.n_layer);
  for (const ParamSpec& p : layout_.params()) {
    float* w = params + p.offset;
    const std::string& n = p.name;
    auto ends_with = [&](const char* s) {
      const size_t len = std::strlen(s);
      return n.size() >= len && n.compare(n.size() - len, len, s) == 0;
    };
    if (ends_with("ln1w") || ends_with("ln2w") || n == "lnfw") {
      for (int64_t i = 0; i < p.numel; ++i) w[i] = 1.f;
    } else if (p.shape.size() == 2) {
      const double std = (ends_with("attprojw") || ends_with("fcprojw")) ? residual_std : 0.02;
      // Only the real vocabulary rows of wte are drawn; padded rows stay 0 (never looked up,
      // and their logits are masked out of the softmax).
      const int64_t n_init = n == "wte" ? int64_t{config_.vocab_size} * p.shape[1] : p.numel;
      for (int64_t i = 0; i < n_init; ++i) w[i] = static_cast<float>(std * rng.Normal());
    }
    // Biases and LayerNorm biases stay 0.
  }
}

absl::Status Gpt::EnsureActivations(int B, int T) {
  if (acts_.B == B && acts_.T == T) return absl::OkStatus();
  acts_ = Activations();
  const int64_t L = config_.n_layer, C = config_.n_embd, NH = config_.n_head;
  const int64_t Vp = config_.padded_vocab_size, BT = int64_t{B} * T;
  auto make = [&](tensor::Tensor& t, std::vector<int64_t> shape) -> absl::Status {
    DT_ASSIGN_OR_RETURN(t, tensor::Tensor::Empty(allocator_, DType::kF32, std::move(shape),
                                                 tensor::MemoryCategory::kActivations));
    return absl::OkStatus();
  };
  DT_RETURN_IF_ERROR(make(acts_.encoded, {B, T, C}));
  DT_RETURN_IF_ERROR(make(acts_.ln1, {L, B, T, C}));
  DT_RETURN_IF_ERROR(make(acts_.ln1_mean, {L, B, T}));
  DT_RETURN_IF_ERROR(make(acts_.ln1_rstd, {L, B, T}));
  DT_RETURN_IF_ERROR(make(acts_.qkv, {L, B, T, 3 * C}));
  DT_RETURN_IF_ERROR(make(acts_.atty, {L, B, T, C}));
  DT_RETURN_IF_ERROR(make(acts_.att, {L, B, NH, T, T}));
  DT_RETURN_IF_ERROR(make(acts_.residual2, {L, B, T, C}));
  DT_RETURN_IF_ERROR(make(acts_.ln2, {L, B, T, C}));
  DT_RETURN_IF_ERROR(make(acts_.ln2_mean, {L, B, T}));
  DT_RETURN_IF_ERROR(make(acts_.ln2_rstd, {L, B, T}));
  DT_RETURN_IF_ERROR(make(acts_.fch, {L, B, T, 4 * C}));
  DT_RETURN_IF_ERROR(make(acts_.fch_gelu, {L, B, T, 4 * C}));
  DT_RETURN_IF_ERROR(make(acts_.residual3, {L, B, T, C}));
  DT_RETURN_IF_ERROR(make(acts_.lnf, {B, T, C}));
  DT_RETURN_IF_ERROR(make(acts_.lnf_mean, {B, T}));
  DT_RETURN_IF_ERROR(make(acts_.lnf_rstd, {B, T}));
  DT_RETURN_IF_ERROR(make(acts_.logits, {B, T, Vp}));
  DT_RETURN_IF_ERROR(make(acts_.losses, {B, T}));
  DT_RETURN_IF_ERROR(make(acts_.dstream, {B, T, C}));
  DT_RETURN_IF_ERROR(make(acts_.dbtc, {B, T, C}));
  DT_RETURN_IF_ERROR(make(acts_.dqkv, {B, T, 3 * C}));
  DT_RETURN_IF_ERROR(make(acts_.dfch_gelu, {B, T, 4 * C}));
  DT_RETURN_IF_ERROR(make(acts_.dfch, {B, T, 4 * C}));
  DT_RETURN_IF_ERROR(make(acts_.att_scratch, {k::AttentionBackwardScratchFloats(B, T, C, NH)}));
  acts_.tokens.assign(BT, 0);
  acts_.B = B;
  acts_.T = T;
  return absl::OkStatus();
}

namespace {

// A module's parameters or gradients as ParamAccess hands them out, addressed by flat offsets.
template <typename T>
struct ModuleView {
  T* base = nullptr;
  int64_t first = 0;                 // flat offset of the module's first float
  const uint16_t* base16 = nullptr;  // the same parameters stored in bf16, when they are
  T* operator()(int64_t flat_offset) const { return base + (flat_offset - first); }
  const uint16_t* bf16(int64_t flat_offset) const {
    return base16 != nullptr ? base16 + (flat_offset - first) : nullptr;
  }
};

}  // namespace

std::vector<int> Gpt::Bf16OnlyParams() const {
  std::vector<int> out;
  for (int i = 0; i < static_cast<int>(layout_.params().size()); ++i) {
    const std::string& name = layout_.params()[i].name;
    if (name == "wte") out.push_back(i);
    for (const char* suffix : {".qkvw", ".attprojw", ".fcw", ".fcprojw"}) {
      if (absl::EndsWith(name, suffix)) out.push_back(i);
    }
  }
  return out;
}

void Gpt::LinearForward(float* out, const float* inp, const float* weight, const uint16_t* weight16,
                        const float* bias, int64_t M, int64_t K, int64_t N) const {
  if (bf16_matmuls_ && weight16 != nullptr) {
    k::MatmulForwardBf16(out, inp, weight16, bias, M, K, N);
  } else if (bf16_matmuls_) {
    k::MatmulForwardBf16(out, inp, weight, bias, M, K, N);
  } else {
    k::MatmulForward(out, inp, weight, bias, M, K, N);
  }
}

void Gpt::LinearBackward(float* dinp, float* dweight, float* dbias, const float* dout,
                         const float* inp, const float* weight, const uint16_t* weight16, int64_t M,
                         int64_t K, int64_t N, bool overwrite_dweight) const {
  if (bf16_matmuls_ && weight16 != nullptr) {
    k::MatmulBackwardBf16(dinp, dweight, dbias, dout, inp, weight16, M, K, N,
                          /*accumulate_dinp=*/false, /*accumulate_dweight=*/!overwrite_dweight);
    return;
  }
  if (overwrite_dweight) std::fill(dweight, dweight + N * K, 0.f);  // the kernels below add
  if (bf16_matmuls_) {
    k::MatmulBackwardBf16(dinp, dweight, dbias, dout, inp, weight, M, K, N);
  } else {
    k::MatmulBackward(dinp, dweight, dbias, dout, inp, weight, M, K, N);
  }
}

absl::StatusOr<float> Gpt::Forward(const float* params, const int32_t* tokens,
                                   const int32_t* targets, int B, int T, float dloss) {
  FlatParamAccess access(layout_, params);
  return Forward(access, tokens, targets, B, T, dloss);
}

absl::Status Gpt::Backward(const float* params, float* grads) {
  FlatParamAccess access(layout_, params, grads);
  return Backward(access);
}

absl::StatusOr<float> Gpt::Forward(ParamAccess& access, const int32_t* tokens,
                                   const int32_t* targets, int B, int T, float dloss) {
  backward_ready_ = false;
  if (B <= 0 || T <= 0 || T > config_.block_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch shape (", B, ", ", T, ") out of range; block_size is ", config_.block_size));
  }
  const int64_t BT = int64_t{B} * T;
  const int V = config_.vocab_size;
  for (int64_t i = 0; i < BT; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V ||
        (targets != nullptr && (targets[i] < 0 || targets[i] >= V))) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id at position ", i, " is outside the vocabulary [0, ", V, ")"));
    }
  }
  DT_RETURN_IF_ERROR(EnsureActivations(B, T));
  Activations& a = acts_;
  std::memcpy(a.tokens.data(), tokens, BT * sizeof(int32_t));
  const int L = config_.n_layer, C = config_.n_embd, NH = config_.n_head;
  const int Vp = config_.padded_vocab_size;
  const int64_t btc = BT * C;
  auto params_of = [&](int module) -> absl::StatusOr<ModuleView<const float>> {
    DT_ASSIGN_OR_RETURN(const float* base, access.AcquireParams(module, Pass::kForward));
    return ModuleView<const float>{base, layout_.modules()[module].offset,
                                   bf16_matmuls_ ? access.Bf16Params(module) : nullptr};
  };

  // Phase 1: embeddings. encoded (B,T,C) = wte[tokens] + wpe[0..T)
  {
    DT_ASSIGN_OR_RETURN(auto emb, params_of(embedding_module_));
    const float* wte = emb(offsets_.wte);
    const int32_t* ids = tokens;
    if (const uint16_t* wte16 = emb.bf16(offsets_.wte)) {
      // wte stays in bf16: widen only this batch's rows and look them up by position.
      if (!a.wte_rows.defined() || a.wte_rows.numel() != btc) {
        DT_ASSIGN_OR_RETURN(a.wte_rows,
                            tensor::Tensor::Empty(allocator_, DType::kF32, {B, T, C},
                                                  tensor::MemoryCategory::kActivations));
        a.positions.resize(BT);
        for (int64_t i = 0; i < BT; ++i) a.positions[i] = static_cast<int32_t>(i);
      }
      for (int64_t i = 0; i < BT; ++i) {
        k::HalfToFloat(DType::kBF16, a.wte_rows.data<float>() + i * C,
                       wte16 + int64_t{tokens[i]} * C, C);
      }
      wte = a.wte_rows.data<float>();
      ids = a.positions.data();
    }
    k::EncoderForward(a.encoded.data<float>(), ids, wte, emb(offsets_.wpe), B, T, C);
    DT_RETURN_IF_ERROR(access.ReleaseParams(embedding_module_, Pass::kForward));
  }

  // Phase 2: transformer blocks, each reading the residual stream left by the previous one.
  for (int l = 0; l < L; ++l) {
    const BlockParams& p = offsets_.blocks[l];
    DT_ASSIGN_OR_RETURN(auto w, params_of(block_modules_[l]));
    const float* x = l == 0 ? a.encoded.data<float>() : a.residual3.data<float>() + (l - 1) * btc;
    float* ln1 = a.ln1.data<float>() + l * btc;                      // (B,T,C)
    float* ln1_mean = a.ln1_mean.data<float>() + l * BT;             // (B,T)
    float* ln1_rstd = a.ln1_rstd.data<float>() + l * BT;             // (B,T)
    float* qkv = a.qkv.data<float>() + l * 3 * btc;                  // (B,T,3C)
    float* atty = a.atty.data<float>() + l * btc;                    // (B,T,C)
    float* att = a.att.data<float>() + int64_t{l} * B * NH * T * T;  // (B,NH,T,T)
    float* residual2 = a.residual2.data<float>() + l * btc;          // (B,T,C)
    float* ln2 = a.ln2.data<float>() + l * btc;                      // (B,T,C)
    float* ln2_mean = a.ln2_mean.data<float>() + l * BT;
    float* ln2_rstd = a.ln2_rstd.data<float>() + l * BT;
    float* fch = a.fch.data<float>() + l * 4 * btc;            // (B,T,4C)
    float* fch_gelu = a.fch_gelu.data<float>() + l * 4 * btc;  // (B,T,4C)
    float* residual3 = a.residual3.data<float>() + l * btc;    // (B,T,C)

    k::LayerNormForward(ln1, ln1_mean, ln1_rstd, x, w(p.ln1w), w(p.ln1b), BT, C);
    LinearForward(qkv, ln1, w(p.qkvw), w.bf16(p.qkvw), w(p.qkvb), BT, C, 3 * C);
    k::AttentionForward(atty, att, qkv, B, T, C, NH);
    // attproj goes straight into residual2, then the skip connection is added in place.
    LinearForward(residual2, atty, w(p.attprojw), w.bf16(p.attprojw), w(p.attprojb), BT, C, C);
    k::AddInPlace(residual2, x, btc);
    k::LayerNormForward(ln2, ln2_mean, ln2_rstd, residual2, w(p.ln2w), w(p.ln2b), BT, C);
    LinearForward(fch, ln2, w(p.fcw), w.bf16(p.fcw), w(p.fcb), BT, C, 4 * C);
    k::GeluForward(fch_gelu, fch, BT * 4 * C);
    LinearForward(residual3, fch_gelu, w(p.fcprojw), w.bf16(p.fcprojw), w(p.fcprojb), BT, 4 * C, C);
    k::AddInPlace(residual3, residual2, btc);
    DT_RETURN_IF_ERROR(access.ReleaseParams(block_modules_[l], Pass::kForward));
  }

  // Phase 3: final LayerNorm and the tied LM head. logits (B,T,Vp) = lnf · wteᵀ
  {
    DT_ASSIGN_OR_RETURN(auto fin, params_of(final_module_));
    DT_ASSIGN_OR_RETURN(auto emb, params_of(embedding_module_));
    const float* last = a.residual3.data<float>() + (L - 1) * btc;
    k::LayerNormForward(a.lnf.data<float>(), a.lnf_mean.data<float>(), a.lnf_rstd.data<float>(),
                        last, fin(offsets_.lnfw), fin(offsets_.lnfb), BT, C);
    LinearForward(a.logits.data<float>(), a.lnf.data<float>(), emb(offsets_.wte),
                  emb.bf16(offsets_.wte), nullptr, BT, C, Vp);
    DT_RETURN_IF_ERROR(access.ReleaseParams(embedding_module_, Pass::kForward));
    DT_RETURN_IF_ERROR(access.ReleaseParams(final_module_, Pass::kForward));
  }
  if (targets == nullptr) return 0.f;

  // Phase 4: cross-entropy, with its backward fused in when training (logits become dlogits).
  k::CrossEntropyForwardBackward(a.losses.data<float>(), a.logits.data<float>(), targets, BT, V, Vp,
                                 dloss);
  backward_ready_ = dloss > 0.f;
  return static_cast<float>(k::MeanLoss(a.losses.data<float>(), BT));
}

absl::Status Gpt::Backward(ParamAccess& access) {
  if (!backward_ready_) {
    return absl::FailedPreconditionError(
        "Backward needs a preceding training Forward (targets and dloss > 0)");
  }
  backward_ready_ = false;
  Activations& a = acts_;
  const int B = a.B, T = a.T;
  const int L = config_.n_layer, C = config_.n_embd, NH = config_.n_head;
  const int Vp = config_.padded_vocab_size;
  const int64_t BT = int64_t{B} * T, btc = BT * C;
  float* dstream = a.dstream.data<float>();  // (B,T,C)
  float* dbtc = a.dbtc.data<float>();        // (B,T,C)
  auto params_of = [&](int module) -> absl::StatusOr<ModuleView<const float>> {
    DT_ASSIGN_OR_RETURN(const float* base, access.AcquireParams(module, Pass::kBackward));
    return ModuleView<const float>{base, layout_.modules()[module].offset,
                                   bf16_matmuls_ ? access.Bf16Params(module) : nullptr};
  };
  auto grads_of = [&](int module) -> absl::StatusOr<ModuleView<float>> {
    DT_ASSIGN_OR_RETURN(float* base, access.AcquireGrads(module));
    return ModuleView<float>{base, layout_.modules()[module].offset};
  };

  // The embedding's gradients stay acquired through the whole pass: the tied head adds to dwte
  // first, the encoder backward last.
  DT_ASSIGN_OR_RETURN(auto demb, grads_of(embedding_module_));
  {
    DT_ASSIGN_OR_RETURN(auto fin, params_of(final_module_));
    DT_ASSIGN_OR_RETURN(auto emb, params_of(embedding_module_));
    DT_ASSIGN_OR_RETURN(auto dfin, grads_of(final_module_));
    // Head: dlnf = dlogits · wte; dwte += dlogitsᵀ · lnf. dlnf lands in dbtc.
    LinearBackward(dbtc, demb(offsets_.wte), nullptr, a.logits.data<float>(), a.lnf.data<float>(),
                   emb(offsets_.wte), emb.bf16(offsets_.wte), BT, C, Vp,
                   access.FreshGrads(embedding_module_));
    DT_RETURN_IF_ERROR(access.ReleaseParams(embedding_module_, Pass::kBackward));
    // Final LayerNorm: its input is the last residual stream; the stream gradient starts here.
    k::Fill(dstream, btc, 0.f);
    k::LayerNormBackward(dstream, dfin(offsets_.lnfw), dfin(offsets_.lnfb), dbtc,
                         a.residual3.data<float>() + (L - 1) * btc, fin(offsets_.lnfw),
                         a.lnf_mean.data<float>(), a.lnf_rstd.data<float>(), BT, C);
    DT_RETURN_IF_ERROR(access.ReleaseGrads(final_module_));
    DT_RETURN_IF_ERROR(access.ReleaseParams(final_module_, Pass::kBackward));
  }

  // Blocks in reverse. dstream holds ∂loss/∂(block output); each LayerNorm backward adds its
  // branch into dstream, which the skip connection carries unchanged.
  for (int l = L - 1; l >= 0; --l) {
    const BlockParams& p = offsets_.blocks[l];
    DT_ASSIGN_OR_RETURN(auto w, params_of(block_modules_[l]));
    DT_ASSIGN_OR_RETURN(auto dw, grads_of(block_modules_[l]));
    // A fresh gradient buffer's weight parts start unwritten: the products overwrite them.
    const bool fresh = access.FreshGrads(block_modules_[l]);
    const float* x = l == 0 ? a.encoded.data<float>() : a.residual3.data<float>() + (l - 1) * btc;
    const float* ln1 = a.ln1.data<float>() + l * btc;
    const float* qkv = a.qkv.data<float>() + l * 3 * btc;
    const float* atty = a.atty.data<float>() + l * btc;
    const float* att = a.att.data<float>() + int64_t{l} * B * NH * T * T;
    const float* residual2 = a.residual2.data<float>() + l * btc;
    const float* ln2 = a.ln2.data<float>() + l * btc;
    const float* fch = a.fch.data<float>() + l * 4 * btc;
    const float* fch_gelu = a.fch_gelu.data<float>() + l * 4 * btc;
    float* dfch_gelu = a.dfch_gelu.data<float>();  // (B,T,4C)
    float* dfch = a.dfch.data<float>();            // (B,T,4C)
    float* dqkv = a.dqkv.data<float>();            // (B,T,3C)

    // MLP branch: residual3 = residual2 + fcproj(gelu(fc(ln2(residual2)))).
    LinearBackward(dfch_gelu, dw(p.fcprojw), dw(p.fcprojb), dstream, fch_gelu, w(p.fcprojw),
                   w.bf16(p.fcprojw), BT, 4 * C, C, fresh);
    k::GeluBackward(dfch, fch, dfch_gelu, BT * 4 * C);
    LinearBackward(dbtc, dw(p.fcw), dw(p.fcb), dfch, ln2, w(p.fcw), w.bf16(p.fcw), BT, C, 4 * C,
                   fresh);
    k::LayerNormBackward(dstream, dw(p.ln2w), dw(p.ln2b), dbtc, residual2, w(p.ln2w),
                         a.ln2_mean.data<float>() + l * BT, a.ln2_rstd.data<float>() + l * BT, BT,
                         C);
    // Attention branch: residual2 = x + attproj(attn(qkv(ln1(x)))).
    LinearBackward(dbtc, dw(p.attprojw), dw(p.attprojb), dstream, atty, w(p.attprojw),
                   w.bf16(p.attprojw), BT, C, C, fresh);
    k::AttentionBackward(dqkv, a.att_scratch.data<float>(), dbtc, qkv, att, B, T, C, NH);
    LinearBackward(dbtc, dw(p.qkvw), dw(p.qkvb), dqkv, ln1, w(p.qkvw), w.bf16(p.qkvw), BT, C, 3 * C,
                   fresh);
    k::LayerNormBackward(dstream, dw(p.ln1w), dw(p.ln1b), dbtc, x, w(p.ln1w),
                         a.ln1_mean.data<float>() + l * BT, a.ln1_rstd.data<float>() + l * BT, BT,
                         C);
    DT_RETURN_IF_ERROR(access.ReleaseGrads(block_modules_[l]));
    DT_RETURN_IF_ERROR(access.ReleaseParams(block_modules_[l], Pass::kBackward));
  }

  // Embeddings: dstream is now ∂loss/∂encoded.
  k::EncoderBackward(demb(offsets_.wte), demb(offsets_.wpe), dstream, a.tokens.data(), B, T, C);
  return access.ReleaseGrads(embedding_module_);
}

}  // namespace dstrain::model
