// How the model reaches its parameters and gradients, one module at a time.
//
// The model asks for a module right before that module's kernels run and hands it back right
// after, so whoever owns the memory decides where a module lives in between: the flat buffers of
// plain data parallelism (FlatParamAccess below), a padded ZeRO buffer, or a ZeRO-3 gather that
// exists only while the module runs. A module view is indexed like the flat layout minus the
// module's first offset: parameter p of module m is at view + (p.offset - modules()[m].offset).
//
// Order of calls in one training micro-batch of the GPT (DeepSpeed's module hooks fire likewise):
//   forward:  embedding, block.0 .. block.L-1, final + embedding (the LM head is tied to wte)
//   backward: final + embedding params and grads; embedding params released after the head;
//             block.L-1 .. block.0 (params and grads); embedding grads last (encoder backward).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/param_layout.h"

namespace dstrain::model {

enum class Pass { kForward, kBackward };

class ParamAccess {
 public:
  virtual ~ParamAccess() = default;
  // The module's parameters, valid until the matching ReleaseParams.
  virtual absl::StatusOr<const float*> AcquireParams(int module, Pass pass) = 0;
  virtual absl::Status ReleaseParams(int module, Pass pass) = 0;
  // Where the module's gradients accumulate (+=) in this micro-batch; valid until ReleaseGrads,
  // which says the module's gradients of this micro-batch are complete.
  virtual absl::StatusOr<float*> AcquireGrads(int module) = 0;
  virtual absl::Status ReleaseGrads(int module) = 0;

  // The acquired module's parameters as stored in bf16, indexed like the fp32 view, for bf16
  // matrix products without a round trip through fp32; null unless parameters are stored in bf16.
  virtual const uint16_t* Bf16Params(int /*module*/) { return nullptr; }
  // Parameters (indices into layout.params()) the model reads only through Bf16Params when it
  // has them: their floats in the fp32 view may then be left unwidened. The model also writes
  // their gradients first with `=` (a whole matrix product) when FreshGrads says it may, so an
  // access that hands out fresh gradient buffers need not zero those parts.
  virtual void SetBf16OnlyParams(std::vector<int> /*params*/) {}
  // True when AcquireGrads(module) returned a buffer private to this micro-batch whose
  // Bf16OnlyParams parts are unwritten (not zeroed): the model must overwrite them first.
  virtual bool FreshGrads(int /*module*/) { return false; }
};

// Every module inside one flat buffer of layout.total() floats (gradients optional: forward only).
class FlatParamAccess final : public ParamAccess {
 public:
  FlatParamAccess(const ParamLayout& layout, const float* params, float* grads = nullptr)
      : layout_(layout), params_(params), grads_(grads) {}

  absl::StatusOr<const float*> AcquireParams(int module, Pass) override {
    return params_ + layout_.modules()[module].offset;
  }
  absl::Status ReleaseParams(int, Pass) override { return absl::OkStatus(); }
  absl::StatusOr<float*> AcquireGrads(int module) override {
    if (grads_ == nullptr)
      return absl::FailedPreconditionError("no gradient buffer (forward only)");
    return grads_ + layout_.modules()[module].offset;
  }
  absl::Status ReleaseGrads(int) override { return absl::OkStatus(); }

 private:
  const ParamLayout& layout_;
  const float* params_;
  float* grads_;
};

}  // namespace dstrain::model
