// ZeRO stages 1 and 2 (DeepSpeed's stage_1_and_2): every rank keeps the full parameters in the
// padded space and updates only its chunks, then the updated chunks are all-gathered (at most
// allgather_bucket_size elements at a time; broadcast by their owners under allgather_partitions:
// false). Units are DeepSpeed's reduce buckets (reduce_bucket_size, Partition::ForStage);
// reduce_scatter: false averages them with all-reduces instead of reduce-scatters.
//   stage 1: full gradients, reduce-scattered unit by unit at the accumulation boundary;
//   stage 2 (partition_gradients): only this rank's gradient chunks are kept; each unit's
//            gradients are reduce-scattered from a bucket as backward completes it
//            (gradient_buckets.h).
#pragma once

#include <vector>

#include "worker/zero/gradient_buckets.h"
#include "worker/zero/zero_state.h"

namespace dstrain::zero {

class Stage1And2 final : public ZeroState {
 public:
  Stage1And2(const model::ParamLayout& layout, const config::ZeroConfig& config,
             comm::Communicator* dp, comm::CommOptions comm, device::Ops* ops, Partition partition,
             DType storage, GradientReduction reduction);

  absl::Status GetParams(tensor::View flat) override { return PaddedParamsInto(flat); }
  absl::Status FinishBackward() override;
  absl::Status ReduceGradients() override;
  absl::Status FinishStep() override;
  absl::Status GatherAfterLoad() override;

 protected:
  absl::StatusOr<tensor::View> ModuleStorage(int module, model::Pass) override {
    return PaddedModule(params_, module);
  }
  absl::Status ParamsReleased(int) override { return absl::OkStatus(); }
  absl::StatusOr<tensor::View> GradTarget(int module, bool* unwritten) override;
  absl::Status GradsDone(int module) override;
  bool Idle() const override { return buckets_.Idle(); }
  std::vector<tensor::View> NormViews() override;

 private:
  const bool partition_gradients_;  // stage 2
  GradientBuckets buckets_;         // stage 2's gradient path
};

}  // namespace dstrain::zero
