// The engine's side of a dstrain::Module (module.h): a model::Model whose layout comes from the
// module's declarations and whose passes hand the module a Pass over the engine's ParamAccess
// (the flat buffer, ZeRO partitions or ZeRO-3 gathers) and its allocator. docs/library.md.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/api/module.h"
#include "worker/model/model.h"

namespace dstrain::api {

class ModuleModel final : public model::Model {
 public:
  // Runs module->Declare and lays the parameters out. kInvalidArgument naming the parameter or
  // module for a bad declaration. `ops` (not owned) outlives the model.
  static absl::StatusOr<std::unique_ptr<ModuleModel>> Create(std::unique_ptr<Module> module,
                                                             device::Ops* ops);

  // The layout `module` declares, without a device (what `dstrain estimate` and export need).
  // The same errors as Create's declarations.
  static absl::StatusOr<model::ParamLayout> DeclaredLayout(Module& module);

  const model::ParamLayout& layout() const override { return layout_; }
  device::Ops& ops() const override { return *ops_; }
  void set_matmul_precision(DType compute) override { matmul_ = compute; }
  DType matmul_precision() const { return matmul_; }
  // Each parameter from its Init: normal and uniform draws from a generator seeded with `seed`
  // and the parameter's index, so a parameter's values do not depend on the others' sizes.
  void InitParams(float* params, uint64_t seed) const override;
  // The module's own ImportParams, over a zeroed buffer (the padding stays zero).
  absl::Status ImportParams(const std::string& path, float* params) const override;

  absl::StatusOr<float> Forward(model::ParamAccess& access, const model::Batch& batch,
                                std::optional<model::LossGrad> grad, int buffer = 0) override;
  absl::Status Backward(model::ParamAccess& access, int buffer = 0) override;

  Module& module() { return *module_; }

 private:
  class PassImpl;
  ModuleModel(std::unique_ptr<Module> module, device::Ops* ops, model::ParamLayout layout,
              std::vector<Init> inits)
      : module_(std::move(module)),
        ops_(ops),
        layout_(std::move(layout)),
        inits_(std::move(inits)) {}

  std::unique_ptr<Module> module_;
  device::Ops* ops_;
  model::ParamLayout layout_;
  std::vector<Init> inits_;
  DType matmul_ = DType::kF32;
  // Per activation buffer: the micro-batch's activations by name, and its loss gradient factor,
  // from its training Forward to the end of its Backward.
  struct MicroBatch {
    std::map<std::string, tensor::Tensor> activations;
    model::LossGrad grad;  // a training forward's
    bool ready = false;    // a training forward ran and its backward has not
  };
  std::map<int, MicroBatch> saved_;
};

}  // namespace dstrain::api
