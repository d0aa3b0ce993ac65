// Ops: every computation the model, ZeRO and the engine run, for one device — the seam between the
// training code and the kernels (docs/architecture.md, "The device seam").
//
//   model::Gpt ─┐
//   zero::*    ─┼─▶ device::Ops ─▶ CpuOps  ─▶ kernels/<op>/            (vectorised C++, oneDNN)
//   engine     ─┘                └▶ CudaOps ─▶ kernels/<op>/cuda/       (CUDA, cuBLAS(Lt))
//
// Callers hand over tensor::Views (pointer, dtype, shape, device) and never name a kernel; a
// backend picks the kernel for the dtypes it is given. llm.c keeps one set of phase functions for
// its CPU and GPU programs; here the phase functions are the model's, written once against Ops.
//
// Execution. Operations are issued in order on the device's compute stream and may run
// asynchronously with the host (CUDA), or complete before returning (CPU). Device memory may be
// freed to the allocator while queued operations still use it: the device's allocator hands it
// out again only to work ordered after them (tensor/allocator.h). Host memory passed to
// CopyFromHost may be reused once the call returns; the only operations that wait for the
// device are the ones returning a host value (SumSquares, MeanLoss, CopyToHost) and Synchronize.
// Collectives run on a second stream (Stream::kComm, handed to the communicator as the
// CommBuffer's stream); WaitFor orders one stream after another without blocking the host.
//
// Errors are sticky, as a CUDA stream's are: the first failing operation (bad arguments, a launch
// error, an unsupported dtype) records its status, every later operation is skipped, and status()
// and Synchronize() return that first error. Callers check status() at their phase boundaries
// (the model after each module, ZeroState after each reduction, the engine after each step), so
// an error surfaces as a Status naming the operation, never as a crash.
//
// Arguments are checked here, once for every backend (devices, dtypes, shapes: what each function
// lists), before the backend runs; a backend adds its own refusals (dtypes it has no kernel for:
// kUnimplemented). Element-wise outputs may alias their inputs exactly, never partly. Not
// thread-safe: one caller drives a device's Ops.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/types/dtype.h"
#include "kernels/adamw/adamw_args.h"
#include "worker/device/sizing.h"
#include "worker/tensor/allocator.h"
#include "worker/tensor/view.h"

namespace dstrain::device {

using tensor::View;
using AdamWArgs = kernels::AdamWArgs;

enum class Stream { kCompute, kComm };

// Options of a linear layer's products: y (M, N) = x (M, K) · Wᵀ (W: (N, K), as nn.Linear) + b.
struct LinearOptions {
  // Operand type of the products, always with fp32 accumulation: kF32, or kBF16 to round fp32
  // operands to bf16 on the way in (bf16 mixed precision). A weight stored in bf16 is multiplied
  // in bf16 whatever this says.
  DType compute = DType::kF32;
  // LinearForward: the layer is followed by GELU. This (M, N) view receives x·Wᵀ + b and `out`
  // receives gelu of it (the MLP's first layer with its activation, one call).
  View output_gelu;
  // LinearBackward: the layer's input was gelu(input_gelu) (M, K): `dinp` receives the gradient
  // with respect to input_gelu instead of the input (the MLP's second layer).
  View input_gelu;
  // LinearBackward: dweight is overwritten instead of accumulated (a fresh, unzeroed buffer).
  bool overwrite_dweight = false;
};

// One AdamW / Adam update of a partition (kernels/adamw/adamw.h has the arithmetic).
struct AdamWViews {
  View param;    // f32 weights, updated (mixed precision: the master weights)
  View grad;     // f32, or the 16-bit gradients of mixed precision
  View m, v;     // f32 moments, updated
  View param16;  // mixed precision: receives the rounded weights (bf16 / f16); else empty
};

class Ops : public Sizing {
 public:
  virtual ~Ops() = default;
  Ops(const Ops&) = delete;
  Ops& operator=(const Ops&) = delete;

  // The device this runs on and the allocator of its memory (with per-category accounting).
  Device device() const { return allocator_->device(); }
  tensor::Allocator* allocator() const { return allocator_; }
  // Sizing: whether the host may read and write this device's memory directly (the CPU).
  bool host_accessible() const final { return device().is_cpu(); }
  // "cpu (avx512)", "cuda:0 (NVIDIA H200)": for logs.
  virtual std::string Describe() const = 0;

  // OK, or the first error of any operation so far (see the header comment).
  absl::Status status() const { return status_; }
  // Waits for every stream and returns status().
  absl::Status Synchronize();

  // ---- streams ----
  // The native stream (cudaStream_t), or null where there is none (the CPU).
  virtual void* NativeStream(Stream stream) = 0;
  // Work issued to `waiter` from now on starts after the work issued to `producer` so far.
  virtual void WaitFor(Stream waiter, Stream producer) = 0;

  // ---- memory ----
  // dst = src: same dtype and number of elements (shapes may differ), both on this device.
  void Copy(View dst, View src);
  // dst (on this device) = dst.bytes() bytes from host memory at src.
  void CopyFromHost(View dst, const void* src);
  // src.bytes() bytes of src (on this device) to host memory at dst; waits for them.
  void CopyToHost(void* dst, View src);

  // ---- copies that overlap the host's work (pinned host memory and fences) ----
  // An allocator of page-locked host memory (accounted by category like the device's; `limit_bytes`
  // > 0 caps it, for tests of budgets). Copies to and from it below run on the device's copy
  // engines while the host goes on. Errors: kUnimplemented where the device's memory is host
  // memory already (the CPU); kResourceExhausted from its Allocate when the host cannot lock more.
  virtual absl::StatusOr<std::unique_ptr<tensor::Allocator>> NewPinnedHostAllocator(
      int64_t limit_bytes = 0);
  // Queued on the compute stream after the work issued so far: dst (this device) receives the
  // bytes at src as they are when the copy runs, so src must not change until a fence recorded
  // after this call has been waited for. With pageable src the copy has taken the bytes on return.
  void CopyFromHostAsync(View dst, const void* src);
  // Queued likewise: dst (host memory) holds src's bytes once a fence recorded after this call has
  // been waited for, not before (with pageable dst: on return).
  void CopyToHostAsync(void* dst, View src);
  // A point in the compute stream's work issued so far. WaitFence returns once that work has
  // finished, with status(); each fence is waited for exactly once (that releases it). On a device
  // without asynchronous work (the CPU) every fence has passed when it is recorded.
  int RecordFence();
  absl::Status WaitFence(int fence);
  // x = value, rounded to x's dtype (f32, bf16 or f16).
  void Fill(View x, float value);
  // dst = src in dst's dtype, rounded to nearest even: f32 ↔ bf16 / f16, or a plain copy when
  // the dtypes agree. Same number of elements.
  void Convert(View dst, View src);

  // ---- element-wise arithmetic (floating point) ----
  // acc += x with one rounding into acc's dtype; x is f32 or acc's dtype (any floating dtype when
  // acc is f32: a 16-bit x is widened exactly first). Same element count.
  void AddInto(View acc, View x);
  // x *= float(s); 16-bit x is widened, scaled and rounded back.
  void Scale(View x, double s);
  // Σ over the views (in order) of Σ x², summed in double; any inf or NaN makes it inf or NaN.
  // Waits for the device.
  absl::StatusOr<double> SumSquares(absl::Span<const View> xs);

  // ---- the GPT's layers (shapes: B batch, T time, C channels, V(p) vocabulary, NH heads) ----
  // out (B,T,C) f32 = wte[tokens] + wpe[0..T): tokens (B,T) i32, wte (Vp,C) f32 or bf16 (rows
  // widened as they are read), wpe (maxT,C) f32 with maxT ≥ T.
  void EncoderForward(View out, View tokens, View wte, View wpe);
  // dwte (Vp,C) += Σ dout rows by token; dwpe (maxT,C) += Σ_b dout[b]. Accumulates (f32).
  void EncoderBackward(View dwte, View dwpe, View dout, View tokens);
  // torch.nn.LayerNorm over the last dimension C = weight.numel(): out, inp (N·C); mean, rstd (N)
  // may be empty (inference). out may be bf16 where bf16_matmul_inputs() (a product's input,
  // written rounded).
  void LayerNormForward(View out, View mean, View rstd, View inp, View weight, View bias);
  // Accumulates into dinp (N·C), dweight and dbias (C).
  void LayerNormBackward(View dinp, View dweight, View dbias, View dout, View inp, View weight,
                         View mean, View rstd);
  // out (M,N) = inp (M,K) · weightᵀ (weight (N,K)) + bias (N; may be empty); options above.
  // Where bf16_matmul_inputs(): inp may be bf16 when the products are (compute or the weight
  // bf16), and out may be bf16 after GELU (output_gelu given; gelu rounded as it is stored).
  void LinearForward(View out, View inp, View weight, View bias, const LinearOptions& options);
  // dinp (M,K) = dout · weight (overwritten); dweight (N,K) += doutᵀ · inp; dbias (N) += the
  // column sums of dout (skipped when empty). inp may be bf16 as in LinearForward.
  void LinearBackward(View dinp, View dweight, View dbias, View dout, View inp, View weight,
                      const LinearOptions& options);
  // Causal self-attention on a fused qkv (B,T,3C) into out (B,T,C), NH heads. `state` keeps what
  // the backward pass needs (AttentionStateElements f32: two softmax statistics per query row on
  // the CPU, the probabilities on CUDA); AttentionBackward overwrites dqkv and uses `scratch`
  // (AttentionScratchElements f32, sized under the thread setting of the calls; sizing.h). out
  // may be bf16 where bf16_matmul_inputs() (rounded as it is stored). `products` is the model's
  // matrix-product precision, kF32 or kBF16, and must be the same in both passes: under kBF16 a
  // backend may run attention's own products on bf16 operands with f32 accumulation where it
  // has a fast route for them (the CPU with AMX: kernels/attention/attention_bf16.h's rounding
  // points); elsewhere they stay f32.
  void AttentionForward(View out, View state, View qkv, int NH, DType products = DType::kF32);
  void AttentionBackward(View dqkv, View scratch, View dout, View qkv, View state, int NH,
                         DType products = DType::kF32);
  // out = gelu(inp) (tanh approximation); dinp = gelu'(inp) · dout (overwritten). f32.
  void GeluForward(View out, View inp);
  void GeluBackward(View dinp, View inp, View dout);
  // Softmax cross-entropy over the first V of Vp columns of logits (N, Vp); targets (N) i32 in
  // [0, V). losses (N) receives the per-row loss (may be empty). With dlogits_scale != 0 the
  // logits are overwritten by dlogits_scale · ∂(Σ losses)/∂logits (0 in the padded columns).
  void CrossEntropy(View losses, View logits, View targets, int V, float dlogits_scale);
  // The mean of losses (N) f32, summed in double in order. Waits for the device.
  absl::StatusOr<double> MeanLoss(View losses);

  // ---- the Llama family's layers (docs/llama.md; HS head size, NKV key/value heads) ----
  // Hugging Face's LlamaRMSNorm over the last dimension C = weight.numel() (kernels/rmsnorm):
  // out = x / sqrt(mean_c x² + eps) · weight. out, inp (N·C) f32, out may alias inp exactly (out
  // may be bf16 where bf16_matmul_inputs(), rounded as stored, apart from inp);
  // rstd (N) f32 may be empty (inference); weight (C) f32; eps >= 0.
  void RmsNormForward(View out, View rstd, View inp, View weight, float eps);
  // Accumulates into dinp (N·C) and dweight (C); rstd (N) from the forward pass.
  void RmsNormBackward(View dinp, View dweight, View dout, View inp, View weight, View rstd);
  // Rotary position embeddings in Hugging Face's rotate_half convention (kernels/rope/rope.h):
  // table (max_pos, D) f32 receives the cos | sin rows for theta > 0 (D = head dim, even).
  void RopeTable(View table, double theta);
  // inp and out (B, T, W) f32: the first n_heads·D values of every token row are rotated for
  // positions pos_offset + t (q and k together when n_heads = NH + NKV of a fused qkv); the
  // rest of out's row is not written. out may alias inp exactly (in place on the qkv);
  // pos_offset + T <= max_pos. Backward: dinp = the inverse rotation of dout, same layout.
  void RopeForward(View out, View inp, View table, int n_heads, int pos_offset = 0);
  void RopeBackward(View dinp, View dout, View table, int n_heads, int pos_offset = 0);
  // SwiGLU on a fused [gate | up] (N, 2I) f32 (kernels/swiglu): out (N, I) = silu(gate) · up,
  // out must not overlap inp (and may be bf16 where bf16_matmul_inputs(), rounded as stored).
  // Backward overwrites dinp (N, 2I) with [d gate | d up]; dinp may alias inp exactly.
  void SwigluForward(View out, View inp);
  void SwigluBackward(View dinp, View inp, View dout);
  // Causal grouped-query self-attention (kernels/gqa): NH query heads share NKV key/value heads
  // (NKV divides NH; query head h reads kv head h / (NH / NKV)). qkv (B, T, (NH + 2·NKV)·HS) f32
  // holds per token the NH q heads, then the NKV k heads, then the NKV v heads; out (B, T, NH·HS)
  // f32 (or bf16 where bf16_matmul_inputs(), rounded as stored). `state` (GqaStateElements) keeps
  // what the backward pass needs, as AttentionForward's; `scratch` (GqaScratchElements f32, sized
  // under the thread setting of the calls; may be empty when that is 0) is working memory of either
  // pass. The backward pass overwrites dqkv.
  void GqaAttentionForward(View out, View state, View scratch, View qkv, int NH, int NKV);
  void GqaAttentionBackward(View dqkv, View scratch, View dout, View qkv, View state, int NH,
                            int NKV);

  // ---- optimizer ----
  // One AdamW / Adam step over a partition: param (mixed: master) f32, grad f32 or 16-bit,
  // m and v f32, param16 empty or 16-bit; all the same element count.
  void AdamW(const AdamWViews& views, const AdamWArgs& args);

 protected:
  explicit Ops(tensor::Allocator* allocator) : allocator_(allocator) {}

  // Records `error` unless an earlier one is recorded. For backends' own refusals and failures.
  void Fail(absl::Status error);
  bool failed() const { return !status_.ok(); }

  // The backend's implementations, called after the checks above passed (and only while no
  // error is recorded). Same contracts as the public functions.
  virtual absl::Status DoSynchronize() = 0;
  virtual void DoCopy(View dst, View src) = 0;
  virtual void DoCopyFromHost(View dst, const void* src) = 0;
  virtual void DoCopyToHost(void* dst, View src) = 0;
  // Defaults for devices without asynchronous copies: the synchronous ones, fences that have
  // always passed.
  virtual void DoCopyFromHostAsync(View dst, const void* src) { DoCopyFromHost(dst, src); }
  virtual void DoCopyToHostAsync(void* dst, View src) { DoCopyToHost(dst, src); }
  virtual int DoRecordFence() { return 0; }
  virtual absl::Status DoWaitFence(int /*fence*/) { return absl::OkStatus(); }
  virtual void DoFill(View x, float value) = 0;
  virtual void DoConvert(View dst, View src) = 0;
  virtual void DoAddInto(View acc, View x) = 0;
  virtual void DoScale(View x, double s) = 0;
  virtual absl::StatusOr<double> DoSumSquares(absl::Span<const View> xs) = 0;
  virtual void DoEncoderForward(View out, View tokens, View wte, View wpe) = 0;
  virtual void DoEncoderBackward(View dwte, View dwpe, View dout, View tokens) = 0;
  virtual void DoLayerNormForward(View out, View mean, View rstd, View inp, View weight,
                                  View bias) = 0;
  virtual void DoLayerNormBackward(View dinp, View dweight, View dbias, View dout, View inp,
                                   View weight, View mean, View rstd) = 0;
  virtual void DoLinearForward(View out, View inp, View weight, View bias,
                               const LinearOptions& options) = 0;
  virtual void DoLinearBackward(View dinp, View dweight, View dbias, View dout, View inp,
                                View weight, const LinearOptions& options) = 0;
  virtual void DoAttentionForward(View out, View state, View qkv, int NH, DType products) = 0;
  virtual void DoAttentionBackward(View dqkv, View scratch, View dout, View qkv, View state, int NH,
                                   DType products) = 0;
  virtual void DoGeluForward(View out, View inp) = 0;
  virtual void DoGeluBackward(View dinp, View inp, View dout) = 0;
  virtual void DoCrossEntropy(View losses, View logits, View targets, int V,
                              float dlogits_scale) = 0;
  virtual absl::StatusOr<double> DoMeanLoss(View losses) = 0;
  virtual void DoRmsNormForward(View out, View rstd, View inp, View weight, float eps) = 0;
  virtual void DoRmsNormBackward(View dinp, View dweight, View dout, View inp, View weight,
                                 View rstd) = 0;
  virtual void DoRopeTable(View table, double theta) = 0;
  virtual void DoRopeForward(View out, View inp, View table, int n_heads, int pos_offset) = 0;
  virtual void DoRopeBackward(View dinp, View dout, View table, int n_heads, int pos_offset) = 0;
  virtual void DoSwigluForward(View out, View inp) = 0;
  virtual void DoSwigluBackward(View dinp, View inp, View dout) = 0;
  virtual void DoGqaAttentionForward(View out, View state, View scratch, View qkv, int NH,
                                     int NKV) = 0;
  virtual void DoGqaAttentionBackward(View dqkv, View scratch, View dout, View qkv, View state,
                                      int NH, int NKV) = 0;
  virtual void DoAdamW(const AdamWViews& views, const AdamWArgs& args) = 0;

 private:
  // Runs the checks of one operation; false (with the error recorded) when they fail or an
  // earlier error is recorded.
  bool Check(absl::Status checks);
  // The checks of a copy between this device (view `v`) and host memory at `host`.
  bool CheckHostCopy(const char* op, View v, const void* host, bool to_host);

  tensor::Allocator* const allocator_;
  absl::Status status_;
};

}  // namespace dstrain::device
