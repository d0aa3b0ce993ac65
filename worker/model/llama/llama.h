// A Llama-family decoder (Hugging Face's LlamaForCausalLM) written as a dstrain::Module, on the
// public library interface alone (worker/api/module.h) and device::Ops: docs/llama.md.
//
//   tokens (B, T) ─▶ embed_tokens ─▶ n_layer × [ x += o_proj(GQA(RoPE(qkv(RMSNorm(x)))))
//                                                x += down(silu(gate(RMSNorm(x))) · up(RMSNorm(x)))
//                                                ]
//                  ─▶ RMSNorm ─▶ lm_head (untied) ─▶ mean cross-entropy over the B·T targets
//
// Parameters, one ZeRO module per layer plus the embedding and the head (names below, and
// HfTensors() maps them to Hugging Face's tensor names). The q, k and v projections are one
// fused matrix per layer, and gate and up another, so each pair of products is one GEMM:
//   module "embed":       embed.tokens      (V, C)                 matrix, normal(0.02)
//   module "layers.{i}":  layers.{i}.input_norm   (C)              ones
//                         layers.{i}.qkv          ((NH + 2·NKV)·HS, C)  matrix, normal(0.02)
//                         layers.{i}.o_proj       (C, NH·HS)       matrix, normal(0.02)
//                         layers.{i}.post_norm    (C)              ones
//                         layers.{i}.gate_up      (2·I, C)         matrix, normal(0.02)
//                         layers.{i}.down         (C, I)           matrix, normal(0.02)
//   module "head":        head.norm         (C)                    ones
//                         head.lm_head      (V, C)                 matrix, normal(0.02)
// with C = n_embd, NH = n_head, NKV = n_kv_head, HS = C / NH, I = intermediate_size,
// V = vocab_size. The batch holds "tokens" and "targets", int32 (B, T) with T <= block_size.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/api/module.h"

namespace dstrain::llama {

struct LlamaConfig {
  int n_layer = 2;
  int n_embd = 64;
  int n_head = 4;
  int n_kv_head = 2;  // n_head: multi-head attention; 1: multi-query
  int intermediate_size = 172;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;  // Hugging Face's rms_norm_eps
  int vocab_size = 256;
  int block_size = 64;  // the longest sequence (max_position_embeddings)

  int head_dim() const { return n_head > 0 ? n_embd / n_head : 0; }
  // The fused qkv projection's rows: (NH + 2·NKV)·HS.
  int64_t qkv_rows() const { return int64_t{n_head + 2 * n_kv_head} * head_dim(); }
  // kInvalidArgument naming the key ("model.n_kv_head: must divide model.n_head (12 % 5 != 0)"):
  // sizes >= 1, n_embd a multiple of n_head, an even head size (RoPE pairs its halves), n_kv_head
  // dividing n_head, rope_theta > 0, norm_eps >= 0 (all finite).
  absl::Status Validate() const;
};

// One Hugging Face tensor as rows [row_begin, row_end) of one of this module's parameters (all
// of them (rows, columns) row-major, or 1-D), so the HF tensor is that contiguous slice.
struct HfTensor {
  std::string hf_name;  // "model.layers.0.self_attn.k_proj.weight"
  std::string param;    // "layers.0.qkv"
  int64_t row_begin = 0, row_end = 0;
};

// Every Hugging Face LlamaForCausalLM tensor of `config`, in HF's order: model.embed_tokens,
// per layer input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm,
// mlp.{gate,up,down}_proj, then model.norm and lm_head. The fused qkv splits into q_proj (rows
// [0, NH·HS)), k_proj ([NH·HS, (NH + NKV)·HS)) and v_proj (the last NKV·HS rows), each in HF's
// own row order (head-major, RoPE's rotate_half pairing within a head, as HF applies it); gate_up
// into gate_proj (rows [0, I)) and up_proj ([I, 2·I)).
std::vector<HfTensor> HfTensors(const LlamaConfig& config);

class Llama final : public Module {
 public:
  // Validates the config first.
  static absl::StatusOr<std::unique_ptr<Llama>> Create(const LlamaConfig& config);
  // Declare refuses an invalid config (the error of Validate), so a Llama made directly fails in
  // api::ModuleModel::Create, before any step.
  explicit Llama(const LlamaConfig& config) : config_(config) {}

  const LlamaConfig& config() const { return config_; }
  // Module indices: 0 the embedding, 1 + i layer i, n_layer + 1 the head.
  int layer_module(int layer) const { return 1 + layer; }
  int head_module() const { return config_.n_layer + 1; }

  // Peak bytes of activation memory a training micro-batch of B × T tokens takes on `ops`'s
  // device with the matrix products on `matmul` operands (Pass::matmul_precision): what Forward
  // keeps for Backward (the inputs, every layer's saved tensors, the logits) plus the larger of
  // the two passes' scratch, exactly as they allocate it (allocator alignment aside). `dstrain
  // estimate` and the out-of-memory message quote it.
  int64_t ActivationBytes(const device::Sizing& ops, int64_t B, int64_t T,
                          DType matmul = DType::kF32) const;
  // Under bf16 products, on a device that takes them (device::Sizing::bf16_matmul_inputs), the
  // activations only the products read (both norms' outputs, the attention's output, SwiGLU's
  // output, the final norm's) are kept in bf16: half their memory, the same results (the
  // products round exactly these values), as the GPT's (model::ActivationPlan). false keeps them
  // in fp32, for comparisons. Default true.
  void set_bf16_matmul_inputs(bool allowed) { bf16_matmul_inputs_ = allowed; }

  absl::Status Declare(Declarer& declarer) override;
  // Hugging Face LlamaForCausalLM weights as safetensors (F32, BF16 or F16; model.init_from):
  // every tensor of HfTensors() with its Hugging Face shape, placed into its parameter's rows.
  // kInvalidArgument naming the file and the tensor for one missing, of another shape, or not
  // the Llama's (a buffer such as rotary_emb.inv_freq is skipped); the file's own errors
  // (safetensors.h) otherwise.
  absl::Status ImportParams(const std::string& path, const model::ParamLayout& layout,
                            float* params) override;
  absl::StatusOr<float> Forward(Pass& pass, const Batch& batch) override;
  absl::Status Backward(Pass& pass) override;

 private:
  // The dtype of the activations only the products read, on `ops` under `matmul` operands.
  DType ProductInputDType(const device::Sizing& ops, DType matmul) const;

  LlamaConfig config_;
  bool bf16_matmul_inputs_ = true;
};

}  // namespace dstrain::llama
