#include "worker/model/llama/llama.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status/status_macros.h"
#include "worker/model/safetensors.h"

namespace dstrain::llama {
namespace {

absl::Status KeyError(const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("model.", key, ": ", what));
}

std::string Layer(int i) { return absl::StrCat("layers.", i); }

// The activations of layer l are named "l<l>.<what>"; the residual stream entering layer l is
// "x<l>" (x0 the embedding, x<n_layer> the last layer's output).
std::string Act(int l, const char* what) { return absl::StrCat("l", l, ".", what); }
std::string Residual(int l) { return absl::StrCat("x", l); }

}  // namespace

absl::Status LlamaConfig::Validate() const {
  const std::pair<const char*, int> sizes[] = {{"n_layer", n_layer},
                                               {"n_embd", n_embd},
                                               {"n_head", n_head},
                                               {"n_kv_head", n_kv_head},
                                               {"intermediate_size", intermediate_size},
                                               {"vocab_size", vocab_size},
                                               {"block_size", block_size}};
  for (const auto& [key, v] : sizes) {
    if (v < 1) return KeyError(key, absl::StrCat("must be at least 1, got ", v));
  }
  if (n_embd % n_head != 0) {
    return KeyError("n_head",
                    absl::StrCat("must divide model.n_embd (", n_embd, " % ", n_head, " != 0)"));
  }
  if (head_dim() % 2 != 0) {
    return KeyError(
        "n_head",
        absl::StrCat("must leave an even head size for RoPE (n_embd / n_head = ", head_dim(), ")"));
  }
  if (n_head % n_kv_head != 0) {
    return KeyError("n_kv_head",
                    absl::StrCat("must divide model.n_head (", n_head, " % ", n_kv_head, " != 0)"));
  }
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) {
    return KeyError("rope_theta", absl::StrCat("must be positive and finite, got ", rope_theta));
  }
  if (!(norm_eps >= 0) || !std::isfinite(norm_eps)) {
    return KeyError("norm_eps", absl::StrCat("must be >= 0 and finite, got ", norm_eps));
  }
  return absl::OkStatus();
}

std::vector<HfTensor> HfTensors(const LlamaConfig& c) {
  const int64_t C = c.n_embd, HS = c.head_dim(), I = c.intermediate_size;
  const int64_t q = int64_t{c.n_head} * HS, kv = int64_t{c.n_kv_head} * HS;
  std::vector<HfTensor> out;
  out.push_back({"model.embed_tokens.weight", "embed.tokens", 0, c.vocab_size});
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string hf = absl::StrCat("model.layers.", i, ".");
    const std::string p = Layer(i) + ".";
    out.push_back({hf + "input_layernorm.weight", p + "input_norm", 0, C});
    out.push_back({hf + "self_attn.q_proj.weight", p + "qkv", 0, q});
    out.push_back({hf + "self_attn.k_proj.weight", p + "qkv", q, q + kv});
    out.push_back({hf + "self_attn.v_proj.weight", p + "qkv", q + kv, q + 2 * kv});
    out.push_back({hf + "self_attn.o_proj.weight", p + "o_proj", 0, C});
    out.push_back({hf + "post_attention_layernorm.weight", p + "post_norm", 0, C});
    out.push_back({hf + "mlp.gate_proj.weight", p + "gate_up", 0, I});
    out.push_back({hf + "mlp.up_proj.weight", p + "gate_up", I, 2 * I});
    out.push_back({hf + "mlp.down_proj.weight", p + "down", 0, C});
  }
  out.push_back({"model.norm.weight", "head.norm", 0, C});
  out.push_back({"lm_head.weight", "head.lm_head", 0, c.vocab_size});
  return out;
}

absl::StatusOr<std::unique_ptr<Llama>> Llama::Create(const LlamaConfig& config) {
  DT_RETURN_IF_ERROR(config.Validate());
  return std::make_unique<Llama>(config);
}

absl::Status Llama::Declare(Declarer& d) {
  DT_RETURN_IF_ERROR(config_.Validate());
  const LlamaConfig& c = config_;
  const int64_t C = c.n_embd, V = c.vocab_size, I = c.intermediate_size;
  // Hugging Face's LlamaPreTrainedModel._init_weights: normal(0, initializer_range = 0.02) for
  // every Linear and the embedding, ones for the RMSNorm weights.
  const Init normal = Init::Normal(0.02);
  d.BeginModule("embed");
  d.Add("embed.tokens", {V, C}, normal, /*matrix=*/true);
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = Layer(i);
    d.BeginModule(p);
    d.Add(p + ".input_norm", {C}, Init::Ones());
    d.Add(p + ".qkv", {c.qkv_rows(), C}, normal, true);
    d.Add(p + ".o_proj", {C, C}, normal, true);
    d.Add(p + ".post_norm", {C}, Init::Ones());
    d.Add(p + ".gate_up", {2 * I, C}, normal, true);
    d.Add(p + ".down", {C, I}, normal, true);
  }
  d.BeginModule("head");
  d.Add("head.norm", {C}, Init::Ones());
  d.Add("head.lm_head", {V, C}, normal, true);
  return absl::OkStatus();
}

absl::StatusOr<float> Llama::Forward(Pass& pass, const Batch& batch) {
  const LlamaConfig& c = config_;
  DT_ASSIGN_OR_RETURN(const BatchTensor tokens_host, batch.Get("tokens", DType::kI32, 2));
  const int64_t B = tokens_host.shape[0], T = tokens_host.shape[1];
  if (B < 1 || T < 1 || T > c.block_size) {
    return absl::InvalidArgumentError(absl::StrCat("batch: 'tokens' is (", B, ", ", T,
                                                   "), expected (B, T) with 1 <= T <= block_size ",
                                                   c.block_size));
  }
  DT_ASSIGN_OR_RETURN(const BatchTensor targets_host, batch.Get("targets", DType::kI32, 2));
  // Ids outside the vocabulary would index outside the embedding and the logits: refused here,
  // on the host, where the batch is.
  for (const auto& [name, t] : {std::pair<const char*, const BatchTensor*>{"tokens", &tokens_host},
                                {"targets", &targets_host}}) {
    const int32_t* ids = static_cast<const int32_t*>(t->data);
    for (int64_t i = 0; i < B * T && t->shape == tokens_host.shape; ++i) {
      if (ids[i] < 0 || ids[i] >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("batch: '", name, "' [", i / T, ", ", i % T,
                                                       "] = ", ids[i], " is not in [0, ",
                                                       c.vocab_size, ")"));
      }
    }
  }
  const int64_t BT = B * T, C = c.n_embd, V = c.vocab_size, I = c.intermediate_size;
  const int NH = c.n_head, NKV = c.n_kv_head, HS = c.head_dim();
  const int64_t W = c.qkv_rows();
  const float eps = static_cast<float>(c.norm_eps);
  device::Ops& ops = pass.ops();

  DT_ASSIGN_OR_RETURN(View tokens, pass.Input(batch, "tokens", DType::kI32, {B, T}));
  DT_ASSIGN_OR_RETURN(View targets, pass.Input(batch, "targets", DType::kI32, {B, T}));
  DT_ASSIGN_OR_RETURN(View table, pass.Activation("rope", DType::kF32, {T, HS}));
  ops.RopeTable(table, c.rope_theta);

  // The embedding: device::Ops has the GPT's encoder (token row + position row); Llama has no
  // position table, so it adds a zero one.
  DT_ASSIGN_OR_RETURN(View x, pass.Activation(Residual(0), DType::kF32, {B, T, C}));
  DT_ASSIGN_OR_RETURN(View zero_pos, pass.Scratch(DType::kF32, {T, C}));
  ops.Fill(zero_pos, 0.f);
  DT_ASSIGN_OR_RETURN(std::vector<View> we, pass.Params(0));
  ops.EncoderForward(x, tokens, we[0], zero_pos);
  DT_RETURN_IF_ERROR(pass.Release(0));

  const int64_t scratch_n = ops.GqaScratchElements(B, T, NH, NKV, HS);
  View gqa_scratch;
  if (scratch_n > 0) {
    DT_ASSIGN_OR_RETURN(gqa_scratch, pass.Scratch(DType::kF32, {scratch_n}));
  }
  // The products' operand type, and the dtype of what only they read (norm1, attout, norm2, h,
  // fnorm).
  const device::LinearOptions linear{pass.matmul_precision()};
  const DType kept = ProductInputDType(ops, pass.matmul_precision());
  for (int l = 0; l < c.n_layer; ++l) {
    DT_ASSIGN_OR_RETURN(View norm1, pass.Activation(Act(l, "norm1"), kept, {B, T, C}));
    DT_ASSIGN_OR_RETURN(View rstd1, pass.Activation(Act(l, "rstd1"), DType::kF32, {BT}));
    DT_ASSIGN_OR_RETURN(View qkv, pass.Activation(Act(l, "qkv"), DType::kF32, {B, T, W}));
    DT_ASSIGN_OR_RETURN(
        View att, pass.Activation(Act(l, "att"), DType::kF32,
                                  {ops.GqaStateElements(static_cast<int>(B), static_cast<int>(T),
                                                        NH, NKV, HS)}));
    DT_ASSIGN_OR_RETURN(View attout, pass.Activation(Act(l, "attout"), kept, {B, T, C}));
    DT_ASSIGN_OR_RETURN(View mid, pass.Activation(Act(l, "mid"), DType::kF32, {B, T, C}));
    DT_ASSIGN_OR_RETURN(View norm2, pass.Activation(Act(l, "norm2"), kept, {B, T, C}));
    DT_ASSIGN_OR_RETURN(View rstd2, pass.Activation(Act(l, "rstd2"), DType::kF32, {BT}));
    DT_ASSIGN_OR_RETURN(View gu, pass.Activation(Act(l, "gu"), DType::kF32, {BT, 2 * I}));
    DT_ASSIGN_OR_RETURN(View h, pass.Activation(Act(l, "h"), kept, {BT, I}));
    DT_ASSIGN_OR_RETURN(View out, pass.Activation(Residual(l + 1), DType::kF32, {B, T, C}));

    DT_ASSIGN_OR_RETURN(std::vector<View> w, pass.Params(layer_module(l)));
    ops.RmsNormForward(norm1, rstd1, x, w[0], eps);
    ops.LinearForward(qkv, norm1, w[1], {}, linear);
    ops.RopeForward(qkv, qkv, table, NH + NKV);  // q and k, in place; v is left alone
    ops.GqaAttentionForward(attout, att, gqa_scratch, qkv, NH, NKV);
    ops.LinearForward(mid, attout, w[2], {}, linear);
    ops.AddInto(mid, x);
    ops.RmsNormForward(norm2, rstd2, mid, w[3], eps);
    ops.LinearForward(gu, norm2, w[4], {}, linear);
    ops.SwigluForward(h, gu);
    ops.LinearForward(out, h, w[5], {}, linear);
    ops.AddInto(out, mid);
    DT_RETURN_IF_ERROR(pass.Release(layer_module(l)));
    DT_RETURN_IF_ERROR(ops.status());
    x = out;
  }

  DT_ASSIGN_OR_RETURN(View fnorm, pass.Activation("fnorm", kept, {B, T, C}));
  DT_ASSIGN_OR_RETURN(View frstd, pass.Activation("frstd", DType::kF32, {BT}));
  DT_ASSIGN_OR_RETURN(View logits, pass.Activation("logits", DType::kF32, {BT, V}));
  DT_ASSIGN_OR_RETURN(View losses, pass.Activation("losses", DType::kF32, {BT}));
  DT_ASSIGN_OR_RETURN(std::vector<View> wh, pass.Params(head_module()));
  ops.RmsNormForward(fnorm, frstd, x, wh[0], eps);
  ops.LinearForward(logits, fnorm, wh[1], {}, linear);
  DT_RETURN_IF_ERROR(pass.Release(head_module()));
  // The mean over the B·T tokens, its backward fused in (as the GPT's): logits become
  // loss_grad / (B·T) · d(Σ losses)/d(logits).
  ops.CrossEntropy(losses, logits, targets.Reshape({BT}), static_cast<int>(V),
                   static_cast<float>(pass.loss_grad() / static_cast<double>(BT)));
  DT_ASSIGN_OR_RETURN(const double loss, ops.MeanLoss(losses));
  return static_cast<float>(loss);
}

absl::Status Llama::ImportParams(const std::string& path, const model::ParamLayout& layout,
                                 float* params) {
  DT_ASSIGN_OR_RETURN(const model::SafetensorsFile file, model::ReadSafetensors(path));
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("model.init_from: ", path, ": ", what));
  };
  std::set<std::string> used;
  for (const HfTensor& t : HfTensors(config_)) {
    const model::ParamSpec* p = layout.Find(t.param);
    if (p == nullptr) return absl::InternalError(absl::StrCat("no parameter ", t.param));
    const int64_t cols = p->shape.size() == 2 ? p->shape[1] : 1;
    std::vector<int64_t> want = {t.row_end - t.row_begin};
    if (p->shape.size() == 2) want.push_back(cols);
    const auto it = file.tensors.find(t.hf_name);
    if (it == file.tensors.end()) {
      return bad(absl::StrCat("no tensor ", t.hf_name,
                              t.hf_name == "lm_head.weight" ? " (a model with tied embeddings: "
                                                              "this Llama's head is untied)"
                                                            : ""));
    }
    if (it->second.shape != want) {
      return bad(absl::StrCat(t.hf_name, " has shape [", absl::StrJoin(it->second.shape, ", "),
                              "], the model block makes it [", absl::StrJoin(want, ", "), "]"));
    }
    std::copy(it->second.data.begin(), it->second.data.end(),
              params + p->offset + t.row_begin * cols);
    used.insert(t.hf_name);
  }
  for (const std::string& name : file.order) {
    if (!used.count(name) && !absl::EndsWith(name, "rotary_emb.inv_freq")) {
      return bad(absl::StrCat(name,
                              " is not a tensor of this Llama (attention biases, tied or "
                              "extra layers are not part of it)"));
    }
  }
  return absl::OkStatus();
}

DType Llama::ProductInputDType(const device::Sizing& ops, DType matmul) const {
  return matmul == DType::kBF16 && bf16_matmul_inputs_ && ops.bf16_matmul_inputs() ? DType::kBF16
                                                                                   : DType::kF32;
}

int64_t Llama::ActivationBytes(const device::Sizing& ops, int64_t B, int64_t T,
                               DType matmul) const {
  // Mirrors Forward's and Backward's allocations; llama_test checks it against the allocator.
  const LlamaConfig& c = config_;
  const int64_t BT = B * T, C = c.n_embd, V = c.vocab_size, I = c.intermediate_size;
  const int64_t W = c.qkv_rows(), HS = c.head_dim();
  const int64_t state = ops.GqaStateElements(static_cast<int>(B), static_cast<int>(T), c.n_head,
                                             c.n_kv_head, static_cast<int>(HS));
  const int64_t gqa = ops.GqaScratchElements(static_cast<int>(B), static_cast<int>(T), c.n_head,
                                             c.n_kv_head, static_cast<int>(HS));
  // tokens, targets (int32) | rope table, residual 0 | per layer: norm1, rstd1, qkv, att,
  // attout, mid, norm2, rstd2, gu, h, residual | fnorm, frstd, logits, losses.
  const int64_t kept = 2 * BT + T * HS + BT * C +
                       c.n_layer * (BT * C * 5 + 2 * BT + BT * W + state + 2 * BT * I + BT * I) +
                       BT * C + 2 * BT + BT * V;
  const int64_t forward_scratch = T * C + gqa;                                  // zero_pos, gqa
  const int64_t backward_scratch = 2 * BT * C + BT * I + BT * W + gqa + T * C;  // dx dc dh dqkv
  // Of `kept`, what only the products read (norm1, attout, norm2, h per layer; fnorm) takes 2
  // bytes an element instead of 4 when kept in bf16.
  const int64_t product_inputs = c.n_layer * (3 * BT * C + BT * I) + BT * C;
  const int64_t saved = ProductInputDType(ops, matmul) == DType::kBF16 ? 2 * product_inputs : 0;
  return 4 * (kept + std::max(forward_scratch, backward_scratch)) - saved;
}

absl::Status Llama::Backward(Pass& pass) {
  const LlamaConfig& c = config_;
  DT_ASSIGN_OR_RETURN(View tokens, pass.Saved("tokens"));
  const int64_t B = tokens.dim(0), T = tokens.dim(1), BT = B * T;
  const int64_t C = c.n_embd, I = c.intermediate_size, W = c.qkv_rows();
  const int NH = c.n_head, NKV = c.n_kv_head, HS = c.head_dim();
  device::Ops& ops = pass.ops();
  const device::LinearOptions linear{pass.matmul_precision()};

  DT_ASSIGN_OR_RETURN(View dlogits, pass.Saved("logits"));
  DT_ASSIGN_OR_RETURN(View fnorm, pass.Saved("fnorm"));
  DT_ASSIGN_OR_RETURN(View frstd, pass.Saved("frstd"));
  DT_ASSIGN_OR_RETURN(View table, pass.Saved("rope"));
  // Pass-long buffers, reused by every layer: dx is the gradient of the residual stream, which
  // each layer's two norms and two residual adds accumulate into in place.
  DT_ASSIGN_OR_RETURN(View dx, pass.Scratch(DType::kF32, {B, T, C}));
  DT_ASSIGN_OR_RETURN(View dc, pass.Scratch(DType::kF32, {B, T, C}));  // d(norm) or d(attout)
  DT_ASSIGN_OR_RETURN(View dh, pass.Scratch(DType::kF32, {BT, I}));
  DT_ASSIGN_OR_RETURN(View dqkv, pass.Scratch(DType::kF32, {B, T, W}));
  const int64_t scratch_n = ops.GqaScratchElements(B, T, NH, NKV, HS);
  View gqa_scratch;
  if (scratch_n > 0) {
    DT_ASSIGN_OR_RETURN(gqa_scratch, pass.Scratch(DType::kF32, {scratch_n}));
  }

  {
    DT_ASSIGN_OR_RETURN(std::vector<View> w, pass.Params(head_module()));
    DT_ASSIGN_OR_RETURN(std::vector<View> g, pass.Grads(head_module()));
    DT_ASSIGN_OR_RETURN(View x, pass.Saved(Residual(c.n_layer)));
    ops.LinearBackward(dc, g[1], {}, dlogits, fnorm, w[1], linear);
    ops.Fill(dx, 0.f);
    ops.RmsNormBackward(dx, g[0], dc, x, w[0], frstd);
    DT_RETURN_IF_ERROR(pass.Release(head_module()));
  }
  for (int l = c.n_layer - 1; l >= 0; --l) {
    DT_ASSIGN_OR_RETURN(View x, pass.Saved(Residual(l)));
    DT_ASSIGN_OR_RETURN(View norm1, pass.Saved(Act(l, "norm1")));
    DT_ASSIGN_OR_RETURN(View rstd1, pass.Saved(Act(l, "rstd1")));
    DT_ASSIGN_OR_RETURN(View qkv, pass.Saved(Act(l, "qkv")));
    DT_ASSIGN_OR_RETURN(View att, pass.Saved(Act(l, "att")));
    DT_ASSIGN_OR_RETURN(View attout, pass.Saved(Act(l, "attout")));
    DT_ASSIGN_OR_RETURN(View mid, pass.Saved(Act(l, "mid")));
    DT_ASSIGN_OR_RETURN(View norm2, pass.Saved(Act(l, "norm2")));
    DT_ASSIGN_OR_RETURN(View rstd2, pass.Saved(Act(l, "rstd2")));
    DT_ASSIGN_OR_RETURN(View gu, pass.Saved(Act(l, "gu")));
    DT_ASSIGN_OR_RETURN(View h, pass.Saved(Act(l, "h")));
    DT_ASSIGN_OR_RETURN(std::vector<View> w, pass.Params(layer_module(l)));
    DT_ASSIGN_OR_RETURN(std::vector<View> g, pass.Grads(layer_module(l)));
    // The MLP: out = mid + down(swiglu(gate_up(norm2(mid)))); dx is d(out).
    ops.LinearBackward(dh, g[5], {}, dx, h, w[5], linear);
    ops.SwigluBackward(gu, gu, dh);  // in place: the pre-activations are dead after this
    ops.LinearBackward(dc, g[4], {}, gu, norm2, w[4], linear);
    ops.RmsNormBackward(dx, g[3], dc, mid, w[3], rstd2);  // dx becomes d(mid)
    // Attention: mid = x + o_proj(gqa(rope(qkv(norm1(x))))).
    ops.LinearBackward(dc, g[2], {}, dx, attout, w[2], linear);
    ops.GqaAttentionBackward(dqkv, gqa_scratch, dc, qkv, att, NH, NKV);
    ops.RopeBackward(dqkv, dqkv, table, NH + NKV);
    ops.LinearBackward(dc, g[1], {}, dqkv, norm1, w[1], linear);
    ops.RmsNormBackward(dx, g[0], dc, x, w[0], rstd1);  // dx becomes d(x)
    DT_RETURN_IF_ERROR(pass.Release(layer_module(l)));
    DT_RETURN_IF_ERROR(ops.status());
  }
  DT_ASSIGN_OR_RETURN(std::vector<View> g, pass.Grads(0));
  DT_ASSIGN_OR_RETURN(View dpos, pass.Scratch(DType::kF32, {T, C}));  // the zero table's, unused
  ops.Fill(dpos, 0.f);
  ops.EncoderBackward(g[0], dpos, dx, tokens);
  DT_RETURN_IF_ERROR(pass.Release(0));
  return ops.status();
}

}  // namespace dstrain::llama
