// ZeRO stage 3: parameters, gradients and optimizer state all partitioned. Each module is a unit
// (Partition::ForStage); the model's acquisition of a module gathers its unit (an all-gather of
// every rank's chunk) unless it is already gathered, and its release drops it again unless the
// unit is persistent (small: stage3_param_persistence_threshold, within
// stage3_model_persistence_threshold) or used again soon. ParamCoordinator decides what to
// prefetch along the recorded order. Gradients take the bucketed reduce-scatter of
// gradient_buckets.h, one unit per module.
#pragma once

#include <memory>
#include <vector>

#include "worker/zero/gradient_buckets.h"
#include "worker/zero/param_coordinator.h"
#include "worker/zero/zero_state.h"

namespace dstrain::zero {

class Stage3 final : public ZeroState {
 public:
  Stage3(const model::ParamLayout& layout, const config::ZeroConfig& config, comm::Communicator* dp,
         comm::CommOptions comm, device::Ops* ops, Partition partition, DType storage,
         GradientReduction reduction);
  ~Stage3() override;

  absl::Status GetParams(tensor::View flat) override;
  void BeginMicroBatch() override { coordinator_.BeginMicroBatch(); }
  absl::Status FinishBackward() override;
  absl::Status ReduceGradients() override { return absl::OkStatus(); }  // done in backward
  absl::Status FinishStep() override;
  void SetTraining(bool training) override { coordinator_.set_training(training); }

  // For tests: how often the recorded order was found stale and recorded again, whether an order
  // is recorded, and a unit's state.
  int64_t trace_invalidations() const { return coordinator_.invalidations(); }
  bool trace_complete() const { return coordinator_.complete(); }
  bool unit_persistent(int unit) const { return units_[unit].persistent; }
  bool unit_gathered(int unit) const { return units_[unit].gathered.defined(); }

 protected:
  absl::StatusOr<tensor::View> ModuleStorage(int module, model::Pass pass) override;
  absl::Status ParamsReleased(int module) override;
  absl::StatusOr<tensor::View> GradTarget(int module, bool* unwritten) override {
    return buckets_.Target(module, unwritten);
  }
  absl::Status GradsDone(int module) override { return buckets_.Done(module); }
  bool Idle() const override;
  void DropGathered() override;
  std::vector<tensor::View> NormViews() override { return {grads_.view()}; }

 private:
  struct UnitState {
    tensor::Tensor gathered;  // the unit's full padded parameters (storage dtype), when gathered
    std::unique_ptr<comm::Work> gather;  // its all-gather in flight (a prefetch)
    int users = 0;                       // acquisitions not yet released
    bool persistent = false;             // kept gathered (small modules)
  };
  absl::Status StartGather(int unit);
  absl::Status EnsureGathered(int unit);
  void DropUnit(int unit);
  absl::Status Prefetch();

  std::vector<UnitState> units_;
  ParamCoordinator coordinator_;
  GradientBuckets buckets_;
  int64_t live_floats_ = 0;  // gathered or in flight
};

}  // namespace dstrain::zero
