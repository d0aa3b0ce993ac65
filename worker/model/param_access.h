// How the model reaches its parameters and gradients, one module at a time.
//
// The model asks for a module right before that module's kernels run and hands it back right
// after, so whoever owns the memory decides where a module lives in between: one flat buffer
// (FlatParamAccess below), a padded ZeRO buffer, or a ZeRO-3 gather that exists only while the
// module runs. A module comes as one tensor::View per parameter, in the module's order
// (ParamLayout::modules()[m].params, which is the size table's order: gpt_sizes.h), on the
// model's device.
//
// Order of calls in one training micro-batch of the GPT (DeepSpeed's module hooks fire likewise):
//   forward:  embedding, block.0 .. block.L-1, final + embedding (the LM head is tied to wte)
//   backward: final + embedding params and grads; embedding params released after the head;
//             block.L-1 .. block.0 (params and grads); embedding grads last (encoder backward).
// A pipeline stage's model runs the same order restricted to the modules it holds.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/param_layout.h"
#include "worker/tensor/view.h"

namespace dstrain::model {

enum class Pass { kForward, kBackward };

// A module's parameters as the model computes with them. Each view is f32, except that a
// parameter whose size-table row is a `matrix` may come in its 16-bit storage type (bf16), which
// the operations reading it (matrix products, the embedding lookup) take directly.
struct ModuleParams {
  std::vector<tensor::View> views;
  const tensor::View& operator[](int i) const { return views[i]; }
};

// Where a module's gradients accumulate (+=) in this micro-batch: one f32 view per parameter.
struct ModuleGrads {
  std::vector<tensor::View> views;
  // The buffers of the module's `matrix` parameters are private to this micro-batch and
  // unwritten (not zeroed): the model must overwrite them first, which it does with the matrix
  // products that compute them (the encoder then adds to wte's).
  bool fresh = false;
  const tensor::View& operator[](int i) const { return views[i]; }
};

class ParamAccess {
 public:
  virtual ~ParamAccess() = default;
  // The module's parameters, valid until the matching ReleaseParams.
  virtual absl::StatusOr<ModuleParams> AcquireParams(int module, Pass pass) = 0;
  virtual absl::Status ReleaseParams(int module, Pass pass) = 0;
  // The module's gradient buffers, valid until ReleaseGrads, which says the module's gradients
  // of this micro-batch are complete.
  virtual absl::StatusOr<ModuleGrads> AcquireGrads(int module) = 0;
  virtual absl::Status ReleaseGrads(int module) = 0;
};

// Views of module `module`'s parameters in a buffer laid out like the flat layout starting at the
// module's first float: parameter p at base + (p.offset - module offset) elements of `dtype`.
std::vector<tensor::View> ModuleViews(const ParamLayout& layout, int module, const void* base,
                                      DType dtype, Device device);

// Every module inside one flat f32 buffer of layout.total() elements on the model's device
// (gradients optional: forward only).
class FlatParamAccess final : public ParamAccess {
 public:
  FlatParamAccess(const ParamLayout& layout, tensor::View params, tensor::View grads = {})
      : layout_(layout), params_(params), grads_(grads) {}

  absl::StatusOr<ModuleParams> AcquireParams(int module, Pass) override;
  absl::Status ReleaseParams(int, Pass) override { return absl::OkStatus(); }
  absl::StatusOr<ModuleGrads> AcquireGrads(int module) override;
  absl::Status ReleaseGrads(int) override { return absl::OkStatus(); }

 private:
  const ParamLayout& layout_;
  tensor::View params_;
  tensor::View grads_;
};

}  // namespace dstrain::model
