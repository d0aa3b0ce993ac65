#include "worker/zero/stage_1_and_2.h"

#include "common/status/status_macros.h"

namespace dstrain::zero {

using tensor::MemoryCategory;
using tensor::Tensor;
using tensor::View;

Stage1And2::Stage1And2(const model::ParamLayout& layout, const config::ZeroConfig& config,
                       comm::Communicator* dp, comm::CommOptions comm, device::Ops* ops,
                       Partition partition, DType storage, GradientReduction reduction)
    : ZeroState(layout, config, dp, comm, ops, std::move(partition), storage, reduction,
                /*params_partitioned=*/false, /*grads_partitioned=*/config.stage == 2),
      partition_gradients_(config.stage == 2),
      buckets_(this) {}

absl::StatusOr<View> Stage1And2::GradTarget(int module, bool* unwritten) {
  if (partition_gradients_) return buckets_.Target(module, unwritten);
  if (unwritten != nullptr) *unwritten = false;
  return PaddedModule(grads_, module);
}

absl::Status Stage1And2::GradsDone(int module) {
  return partition_gradients_ ? buckets_.Done(module) : absl::OkStatus();
}

absl::Status Stage1And2::FinishBackward() {
  if (partition_gradients_) DT_RETURN_IF_ERROR(buckets_.Finish());
  return ops_->status();
}

std::vector<View> Stage1And2::NormViews() {
  if (partition_gradients_) return {grads_.view()};
  std::vector<View> chunks;
  for (const Unit& unit : partition_.units()) {
    chunks.push_back(grads_.view().Sub(GradChunk(unit), unit.chunk));
  }
  return chunks;
}

// Stage 1: each unit's full gradients reduce-scatter in place (reduce_scatter: false, all-reduce);
// this rank keeps its chunk.
absl::Status Stage1And2::ReduceGradients() {
  if (partition_gradients_ || !distributed()) return absl::OkStatus();  // stage 2: in backward
  Tensor copy;
  DT_ASSIGN_OR_RETURN(const View buffer, ReductionBuffer(copy));
  PreScale(buffer);
  BeforeCollective();
  std::vector<std::unique_ptr<comm::Work>> works;
  for (int u = 0; u < static_cast<int>(partition_.units().size()); ++u) {
    const Unit& unit = partition_.units()[u];
    DT_ASSIGN_OR_RETURN(auto work,
                        ReduceUnit(buffer.Sub(unit.padded_offset, partition_.padded_numel(u)),
                                   buffer.Sub(GradChunk(unit), unit.chunk)));
    works.push_back(std::move(work));
  }
  for (auto& work : works) DT_RETURN_IF_ERROR(Wait(work));
  for (const Unit& unit : partition_.units()) {
    const View mine = buffer.Sub(GradChunk(unit), unit.chunk);
    PostScale(mine);
    ReducedIntoGrads(grads_.view().Sub(GradChunk(unit), unit.chunk), mine);
  }
  return ops_->status();
}

absl::Status Stage1And2::FinishStep() {
  ops_->Fill(grads_.view(), 0.f);
  // Every rank updated its chunks; all-gather them in place.
  if (distributed()) DT_RETURN_IF_ERROR(GatherOwnedChunks());
  return ops_->status();
}

absl::Status Stage1And2::GatherAfterLoad() {
  if (distributed()) DT_RETURN_IF_ERROR(GatherOwnedChunks());
  return ops_->status();
}

}  // namespace dstrain::zero
