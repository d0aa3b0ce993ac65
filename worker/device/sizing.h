// What a device decides about memory, without the device: the sizes of the attention's saved
// state and scratch (two softmax statistics per query row on the CPU, the probabilities on CUDA)
// and whether the host reaches its memory directly. device::Ops is a Sizing, so a
// running rank sizes by its own device; `dstrain estimate` sizes a GPU rank with CudaSizing on a
// machine that has no GPU.
//
//   device::CudaSizing cuda;
//   zero::EstimateMemory(layout, activations, zero, stage, world, cuda, precision);
#pragma once

#include <cstdint>

namespace dstrain::device {

class Sizing {
 public:
  virtual ~Sizing() = default;
  // Whether the host may read and write this device's memory directly (the CPU).
  virtual bool host_accessible() const = 0;
  // f32 elements of the GPT attention's saved state (AttentionForward's `state`) and of the
  // backward pass's scratch, for B × T tokens of C channels in NH heads (the CPU's scratch is
  // sized under the thread setting of the calls).
  virtual int64_t AttentionStateElements(int B, int T, int C, int NH) const = 0;
  virtual int64_t AttentionScratchElements(int B, int T, int C, int NH) const = 0;
  // The same for grouped-query attention: NH query heads over NKV key/value heads of size HS.
  virtual int64_t GqaStateElements(int B, int T, int NH, int NKV, int HS) const = 0;
  virtual int64_t GqaScratchElements(int B, int T, int NH, int NKV, int HS) const = 0;
  // Whether the layers take in bf16 the activations that only bf16 matrix products read:
  // LayerNormForward's, RmsNormForward's, AttentionForward's, GqaAttentionForward's and
  // SwigluForward's out and LinearForward's out after GELU written in bf16, the bf16 linear
  // layers' inp read in bf16 (model::ActivationPlan::bf16_matmul_inputs; the Llama alike). The
  // CPU's do; CUDA's not yet.
  virtual bool bf16_matmul_inputs() const { return false; }
};

// A CUDA device's sizes: device::CudaOps answers with these, and an estimate made without a GPU
// uses them directly. The attention keeps the softmax probabilities (B·NH·T·T) and takes its
// scratch from the stream-ordered pool (0 here).
class CudaSizing final : public Sizing {
 public:
  bool host_accessible() const override { return false; }
  int64_t AttentionStateElements(int B, int T, int C, int NH) const override;
  int64_t AttentionScratchElements(int B, int T, int C, int NH) const override;
  int64_t GqaStateElements(int B, int T, int NH, int NKV, int HS) const override;
  int64_t GqaScratchElements(int B, int T, int NH, int NKV, int HS) const override;
};

}  // namespace dstrain::device
