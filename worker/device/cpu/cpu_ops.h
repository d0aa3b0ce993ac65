// CpuOps: device::Ops on the host, over the vectorised CPU kernels of kernels/ (AVX-512 / AVX2 /
// scalar chosen at run time) and oneDNN's matrix products, all on the one OpenMP pool.
//
// Everything completes before the call returns (there are no streams: NativeStream is null and
// WaitFor does nothing). Activations are f32, except under bf16 products those only the products
// read, which may be kept in bf16 (bf16_matmul_inputs: LayerNorm, attention and GELU write them
// rounded, the linear layers read them as they are); matrix products run in f32 or, for bf16
// mixed precision, on bf16 operands with f32 accumulation; 16-bit storage exists for parameters,
// gradients and communication (Ops already refuses what no backend takes, such as an f16 weight
// in a matrix product). The one combination left without a CPU kernel, an AdamW whose gradients
// and 16-bit parameter copy disagree in type, fails with kUnimplemented.
//
// Determinism: every operation gives bitwise the same result for any thread count (the kernels'
// headers state how), so CPU training is reproducible run to run.
#pragma once

#include <string>

#include "worker/device/ops.h"

namespace dstrain::device {

class CpuOps final : public Ops {
 public:
  // `allocator` (not owned) must hand out host memory (its device is the CPU).
  explicit CpuOps(tensor::Allocator* allocator);

  std::string Describe() const override;
  void* NativeStream(Stream) override { return nullptr; }
  void WaitFor(Stream, Stream) override {}
  int64_t AttentionStateElements(int B, int T, int C, int NH) const override;
  int64_t AttentionScratchElements(int B, int T, int C, int NH) const override;
  int64_t GqaStateElements(int B, int T, int NH, int NKV, int HS) const override;
  int64_t GqaScratchElements(int B, int T, int NH, int NKV, int HS) const override;
  bool bf16_matmul_inputs() const override { return true; }

 protected:
  absl::Status DoSynchronize() override { return absl::OkStatus(); }
  void DoCopy(View dst, View src) override;
  void DoCopyFromHost(View dst, const void* src) override;
  void DoCopyToHost(void* dst, View src) override;
  void DoFill(View x, float value) override;
  void DoConvert(View dst, View src) override;
  void DoAddInto(View acc, View x) override;
  void DoScale(View x, double s) override;
  absl::StatusOr<double> DoSumSquares(absl::Span<const View> xs) override;
  void DoEncoderForward(View out, View tokens, View wte, View wpe) override;
  void DoEncoderBackward(View dwte, View dwpe, View dout, View tokens) override;
  void DoLayerNormForward(View out, View mean, View rstd, View inp, View weight,
                          View bias) override;
  void DoLayerNormBackward(View dinp, View dweight, View dbias, View dout, View inp, View weight,
                           View mean, View rstd) override;
  void DoLinearForward(View out, View inp, View weight, View bias,
                       const LinearOptions& options) override;
  void DoLinearBackward(View dinp, View dweight, View dbias, View dout, View inp, View weight,
                        const LinearOptions& options) override;
  // Under bf16 products on a CPU with AMX (AmxUsable), attention's products run in AMX tiles
  // (kernels/attention/attention_bf16.h); otherwise in f32 (attention.h).
  void DoAttentionForward(View out, View state, View qkv, int NH, DType products) override;
  void DoAttentionBackward(View dqkv, View scratch, View dout, View qkv, View state, int NH,
                           DType products) override;
  void DoGeluForward(View out, View inp) override;
  void DoGeluBackward(View dinp, View inp, View dout) override;
  void DoCrossEntropy(View losses, View logits, View targets, int V, float dlogits_scale) override;
  absl::StatusOr<double> DoMeanLoss(View losses) override;
  void DoRmsNormForward(View out, View rstd, View inp, View weight, float eps) override;
  void DoRmsNormBackward(View dinp, View dweight, View dout, View inp, View weight,
                         View rstd) override;
  void DoRopeTable(View table, double theta) override;
  void DoRopeForward(View out, View inp, View table, int n_heads, int pos_offset) override;
  void DoRopeBackward(View dinp, View dout, View table, int n_heads, int pos_offset) override;
  void DoSwigluForward(View out, View inp) override;
  void DoSwigluBackward(View dinp, View inp, View dout) override;
  void DoGqaAttentionForward(View out, View state, View scratch, View qkv, int NH,
                             int NKV) override;
  void DoGqaAttentionBackward(View dqkv, View scratch, View dout, View qkv, View state, int NH,
                              int NKV) override;
  void DoAdamW(const AdamWViews& views, const AdamWArgs& args) override;
};

}  // namespace dstrain::device
