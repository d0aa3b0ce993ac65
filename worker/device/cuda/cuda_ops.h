// CudaOps: device::Ops on one CUDA device, over the CUDA kernels of kernels/*/cuda and cuBLAS.
//
// Two streams: every operation runs on the compute stream; collectives get the communication
// stream (NativeStream(kComm)) and WaitFor orders them with events, so a reduce-scatter can
// overlap the backward pass that follows it. The host waits for the device only where a value
// comes back (SumSquares, MeanLoss, CopyToHost) and in Synchronize.
//
// Activations are f32: unlike the CPU, bf16_matmul_inputs() is false, so Ops refuses bf16
// activations here by name (the GPT keeps them in fp32 on CUDA). bf16 mixed precision runs each
// matrix product on bf16 operands with fp32 accumulation into fp32 outputs: fp32 operands are
// rounded to bf16 in a workspace first (a weight already stored in bf16 is used as it is), which is
// the product the CPU computes too. 16-bit element-wise work (accumulation into 16-bit gradients,
// scaling, norms) widens to fp32 in the workspace where a kernel needs fp32. The workspace is one
// grow-only device buffer under MemoryCategory::kOther.
//
// Determinism: every kernel here is deterministic (fixed reduction orders; the encoder's backward
// sums each token's rows in position order without atomics) except cuBLAS's GEMMs, whose
// algorithm choice may differ between runs on some problem sizes; on one machine with one
// configuration cuBLAS repeats its choice, so runs repeat. Numbers differ from the CPU engine's in
// the last bits (other summation orders), within the tolerances the parity tests state.
//
// Not thread-safe (one caller, as every Ops).
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/matmul/cuda/matmul_cuda.h"
#include "worker/device/cuda/cuda_allocator.h"
#include "worker/device/ops.h"
#include "worker/tensor/tensor.h"

namespace dstrain::device {

class CudaOps final : public Ops {
 public:
  struct Options {
    int device = 0;
    int64_t limit_bytes = 0;  // the allocator's budget; 0: the device's memory
    bool allow_tf32 = false;  // fp32 products on TF32 tensor cores
  };
  // Sets up the device: streams, its caching allocator and a cuBLAS handle.
  // kFailedPrecondition when there is no usable CUDA device.
  static absl::StatusOr<std::unique_ptr<CudaOps>> Create(const Options& options);
  ~CudaOps() override;

  std::string Describe() const override { return description_; }
  void* NativeStream(Stream stream) override;
  void WaitFor(Stream waiter, Stream producer) override;
  int64_t AttentionStateElements(int B, int T, int C, int NH) const override;
  int64_t AttentionScratchElements(int B, int T, int C, int NH) const override;
  int64_t GqaStateElements(int B, int T, int NH, int NKV, int HS) const override;
  int64_t GqaScratchElements(int B, int T, int NH, int NKV, int HS) const override;
  CudaAllocator& cuda_allocator() { return *allocator_; }
  // PinnedHostAllocator (pinned_host_allocator.h).
  absl::StatusOr<std::unique_ptr<tensor::Allocator>> NewPinnedHostAllocator(
      int64_t limit_bytes) override;

 protected:
  absl::Status DoSynchronize() override;
  void DoCopy(View dst, View src) override;
  void DoCopyFromHost(View dst, const void* src) override;
  void DoCopyToHost(void* dst, View src) override;
  void DoCopyFromHostAsync(View dst, const void* src) override;
  void DoCopyToHostAsync(void* dst, View src) override;
  int DoRecordFence() override;
  absl::Status DoWaitFence(int fence) override;
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
  // The products stay f32 under either `products` (ops.h allows it).
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

 private:
  CudaOps(const Options& options, cudaStream_t compute, cudaStream_t comm,
          std::unique_ptr<CudaAllocator> allocator);
  cudaStream_t stream() const { return compute_; }
  // Records a failed launch or call as the sticky error.
  void Check(absl::Status status);
  void CheckCuda(cudaError_t error, const char* what);
  // `count` elements of workspace for `slot` (0-3: up to four live at once within one
  // operation), typed `dtype`; grows as needed.
  View Workspace(int slot, DType dtype, int64_t count);
  // x in f32: itself, or widened into workspace `slot`.
  View AsF32(View x, int slot);
  // x in bf16: itself, or rounded into workspace `slot`.
  View AsBf16(View x, int slot);

  const int device_;
  const cudaStream_t compute_, comm_;
  std::unique_ptr<CudaAllocator> allocator_;
  std::unique_ptr<kernels::gpu::CublasContext> cublas_;
  cudaEvent_t order_event_ = nullptr;
  // RecordFence's events by fence number; the numbers of waited-for fences are reused.
  std::vector<cudaEvent_t> fences_;
  std::vector<int> free_fences_;
  tensor::Tensor workspace_[4];
  std::string description_;
};

}  // namespace dstrain::device
