#include "worker/zero/stage0.h"

#include "common/status/status_macros.h"

namespace dstrain::zero {

using tensor::MemoryCategory;
using tensor::Tensor;
using tensor::View;

Stage0::Stage0(const model::ParamLayout& layout, const config::ZeroConfig& config,
               comm::Communicator* dp, comm::CommOptions comm, device::Ops* ops,
               Partition partition, DType storage, GradientReduction reduction)
    : ZeroState(layout, config, dp, comm, ops, std::move(partition), storage, reduction,
                /*params_partitioned=*/false, /*grads_partitioned=*/false) {}

absl::Status Stage0::ReduceGradients() {
  if (!distributed()) return absl::OkStatus();
  const int n = dp_->size();
  Tensor copy;
  DT_ASSIGN_OR_RETURN(const View buffer, ReductionBuffer(copy));
  PreScale(buffer);
  BeforeCollective();
  DT_ASSIGN_OR_RETURN(auto work, dp_->AllReduce(Buf(buffer), reduce_op_, comm_));
  traffic_.all_reduce += static_cast<int64_t>(buffer.bytes()) * 2 * (n - 1) / n;
  DT_RETURN_IF_ERROR(Wait(work));
  PostScale(buffer);
  ReducedIntoGrads(grads_.view(), buffer);
  return ops_->status();
}

absl::StatusOr<double> Stage0::GradSquaredNorm() { return ops_->SumSquares(LocalNormViews()); }

absl::Status Stage0::FinishStep() {
  ops_->Fill(grads_.view(), 0.f);
  return ops_->status();
}

}  // namespace dstrain::zero
