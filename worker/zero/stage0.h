// ZeRO stage 0: plain data parallelism. Every rank keeps everything (one unit, nothing
// partitioned) and the gradients are all-reduced at the gradient-accumulation boundary.
#pragma once

#include "worker/zero/zero_state.h"

namespace dstrain::zero {

class Stage0 final : public ZeroState {
 public:
  Stage0(const model::ParamLayout& layout, const config::ZeroConfig& config, comm::Communicator* dp,
         comm::CommOptions comm, device::Ops* ops, Partition partition, DType storage,
         GradientReduction reduction);

  absl::Status GetParams(tensor::View flat) override { return PaddedParamsInto(flat); }
  absl::Status ReduceGradients() override;
  // The gradients are the same on every rank after the all-reduce: the norm is local.
  absl::StatusOr<double> GradSquaredNorm() override;
  absl::Status FinishStep() override;

 protected:
  absl::StatusOr<tensor::View> ModuleStorage(int module, model::Pass) override {
    return PaddedModule(params_, module);
  }
  absl::Status ParamsReleased(int) override { return absl::OkStatus(); }
  absl::StatusOr<tensor::View> GradTarget(int module, bool* unwritten) override {
    if (unwritten != nullptr) *unwritten = false;
    return PaddedModule(grads_, module);
  }
  bool Idle() const override { return true; }
  std::vector<tensor::View> NormViews() override { return {grads_.view()}; }
};

}  // namespace dstrain::zero
