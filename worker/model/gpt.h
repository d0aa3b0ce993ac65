// A GPT-2-shaped decoder with hand-written forward and backward passes (llm.c style).
//
//   tokens (B,T) → wte[tok] + wpe[t] → L × [x += attn(ln1(x)); x += mlp(ln2(x))] → lnf
//   → logits = lnf · wteᵀ (tied head, Vp columns) → cross-entropy over the first V columns.
//
// Pre-LayerNorm blocks, causal self-attention with a fused qkv projection, tanh-GELU MLP (4C).
// The model owns its activations (allocated per (B, T) under MemoryCategory::kActivations) but
// not its parameters or gradients: the caller passes the flat buffers laid out by ParamLayout, so
// the engine (and later ZeRO) decides where those live. Not thread-safe: one forward/backward at a
// time; the kernels inside run on the OpenMP pool.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/param_access.h"
#include "worker/model/param_layout.h"
#include "worker/tensor/tensor.h"

namespace dstrain::model {

class Gpt {
 public:
  static absl::StatusOr<std::unique_ptr<Gpt>> Create(const GptConfig& config,
                                                     tensor::Allocator* allocator);

  const GptConfig& config() const { return config_; }

  // Runs every matrix product with bf16 operands and fp32 accumulation (bf16 mixed precision;
  // about twice the fp32 rate on CPUs with AVX-512 BF16). Default: fp32.
  void set_bf16_matmuls(bool on) { bf16_matmuls_ = on; }
  // The parameters this model never reads in fp32 when they are stored in bf16 and the matmuls
  // run in bf16: the block weights (read only by matrix products) and wte (the tied head is a
  // matrix product; the encoder widens only the rows a batch uses).
  std::vector<int> Bf16OnlyParams() const;
  const ParamLayout& layout() const { return layout_; }

  // GPT-2 initialisation, deterministic from `seed`: N(0, 0.02) weights and embeddings,
  // residual projections (attprojw, fcprojw) N(0, 0.02/√(2L)), LayerNorm weights 1, biases 0,
  // padded wte rows 0. REQUIRES: params holds layout().total() floats.
  void InitParams(float* params, uint64_t seed) const;

  // Runs the forward pass on a micro-batch. tokens and targets are (B, T) ids < vocab_size;
  // targets may be null (inference: only logits are produced; returns 0).
  // With dloss > 0 the backward of the cross-entropy is fused in: the logits buffer is turned
  // into dlogits = dloss · ∂(sum of per-token losses)/∂logits, ready for Backward(). Use
  // dloss = scale / (B·T) for a mean loss times `scale` (gradient accumulation, loss scaling).
  // Returns the mean cross-entropy over the B·T tokens.
  // Errors: kInvalidArgument for B, T out of range or token ids ≥ vocab_size.
  absl::StatusOr<float> Forward(const float* params, const int32_t* tokens, const int32_t* targets,
                                int B, int T, float dloss = 0.f);

  // Accumulates (+=) the gradients of the last training Forward into grads (layout().total()
  // floats). REQUIRES: the last Forward had targets and dloss > 0, with the same params.
  absl::Status Backward(const float* params, float* grads);

  // The same two passes with parameters and gradients reached module by module through `access`
  // (see param_access.h for the order of calls); ZeRO supplies its own access.
  absl::StatusOr<float> Forward(ParamAccess& access, const int32_t* tokens, const int32_t* targets,
                                int B, int T, float dloss = 0.f);
  absl::Status Backward(ParamAccess& access);

  // The logits of the last inference Forward: (B, T, Vp), row-major.
  const float* logits() const { return acts_.logits.data<float>(); }
  // Per-token losses of the last Forward with targets: (B, T).
  const float* losses() const { return acts_.losses.data<float>(); }

 private:
  struct Activations {
    int B = 0, T = 0;
    tensor::Tensor encoded;  // (B, T, C) embedding output = residual stream into block 0
    // Per layer, concatenated over L:
    tensor::Tensor ln1, ln1_mean, ln1_rstd;  // (L, B, T, C), (L, B, T), (L, B, T)
    tensor::Tensor qkv;                      // (L, B, T, 3C)
    tensor::Tensor atty;                     // (L, B, T, C) attention output before the projection
    tensor::Tensor att;                      // (L, B, NH, T, T) softmax probabilities
    tensor::Tensor residual2;                // (L, B, T, C) x + attn
    tensor::Tensor ln2, ln2_mean, ln2_rstd;  // (L, B, T, C), (L, B, T), (L, B, T)
    tensor::Tensor fch, fch_gelu;            // (L, B, T, 4C)
    tensor::Tensor residual3;                // (L, B, T, C) block output
    tensor::Tensor lnf, lnf_mean, lnf_rstd;  // (B, T, C), (B, T), (B, T)
    tensor::Tensor logits;                   // (B, T, Vp), dlogits after a training Forward
    tensor::Tensor losses;                   // (B, T)
    // Backward scratch, reused across layers.
    tensor::Tensor dstream;          // (B, T, C) gradient of the residual stream
    tensor::Tensor dbtc;             // (B, T, C)
    tensor::Tensor dqkv;             // (B, T, 3C)
    tensor::Tensor dfch_gelu, dfch;  // (B, T, 4C)
    tensor::Tensor att_scratch;      // attention backward scratch
    std::vector<int32_t> tokens;     // (B, T) copy of the last inputs for the embedding backward
    tensor::Tensor wte_rows;         // (B, T, C) bf16 storage: the batch's wte rows, widened
    std::vector<int32_t> positions;  // (B, T) 0, 1, ...: looks wte_rows up in order
  };

  Gpt(const GptConfig& config, ParamLayout layout, tensor::Allocator* allocator);
  absl::Status EnsureActivations(int B, int T);
  // The linear layers, in fp32 or bf16 per set_bf16_matmuls.
  // weight16: the weight in bf16 when stored so (bf16 matmuls use it as is), else null.
  void LinearForward(float* out, const float* inp, const float* weight, const uint16_t* weight16,
                     const float* bias, int64_t M, int64_t K, int64_t N) const;
  // overwrite_dweight (with weight16 only): dweight = the product instead of +=.
  void LinearBackward(float* dinp, float* dweight, float* dbias, const float* dout,
                      const float* inp, const float* weight, const uint16_t* weight16, int64_t M,
                      int64_t K, int64_t N, bool overwrite_dweight = false) const;

  GptConfig config_;
  ParamLayout layout_;
  GptParamOffsets offsets_;
  int embedding_module_ = 0, final_module_ = 0;
  std::vector<int> block_modules_;  // module index of block l
  tensor::Allocator* allocator_;
  Activations acts_;
  bool backward_ready_ = false;
  bool bf16_matmuls_ = false;
};

}  // namespace dstrain::model
