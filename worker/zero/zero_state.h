// ZeroState: where the parameters, gradients and optimizer state of one data-parallel rank live
// for ZeRO stages 0–3, and the collectives that keep the ranks in step.
//
//   stage | parameters            | gradients                  | Adam moments | at the boundary
//   0     | full                  | full, all-reduced          | full         | -
//   1     | full                  | full, reduce-scattered     | own chunks   | all-gather params
//   2     | full                  | own chunks; each unit is   | own chunks   | all-gather params
//         |                       | reduce-scattered from a    |              |
//         |                       | bucket as backward ends it |              |
//   3     | own chunks; a module  | as stage 2, one unit per   | own chunks   | -
//         | is gathered while it  | module                     |              |
//         | runs (prefetched)     |                            |              |
//
// "Full" buffers use the padded space of partition.h, so a unit's reduce-scatter and all-gather
// run in place. Stage 0 is the same code with one unit and no partitioning (the all-reduce of
// plain data parallelism). Averaging is over the data-parallel ranks (ReduceOp::kAvg), as
// DeepSpeed divides by the data-parallel world size.
//
// The model reaches parameters and gradients through the ParamAccess interface, which is what
// lets stage 3 gather a module just before it runs, prefetch the next ones along the order it
// recorded in the first micro-batch (re-recorded when the order changes), keep small modules
// resident, and free the rest, within stage3_max_live_parameters.
//
// Memory goes through the allocator by category: params, grads, optimizer_state (the ZeRO model
// states), comm_buffers (stage 2/3 gradient buckets), gathered_params (stage 3 gathered modules).
// Not thread-safe; one engine drives it.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/adamw/adamw.h"
#include "worker/comm/communicator.h"
#include "worker/config/config.h"
#include "worker/model/param_access.h"
#include "worker/model/param_layout.h"
#include "worker/tensor/tensor.h"
#include "worker/zero/partition.h"

namespace dstrain::zero {

// Bytes this rank sent in its collectives, by the ring algorithms' count (nccl-tests' bus
// traffic): all-reduce of n bytes 2(N-1)/N·n, reduce-scatter and all-gather of n bytes (the full
// buffer) (N-1)/N·n, broadcast n·(N-1)/N.
struct TrafficStats {
  int64_t all_reduce = 0, reduce_scatter = 0, all_gather = 0, broadcast = 0;
  int64_t total() const { return all_reduce + reduce_scatter + all_gather + broadcast; }
};

class ZeroState final : public model::ParamAccess {
 public:
  // `dp` may be null (one rank). Errors: kResourceExhausted when memory runs out.
  static absl::StatusOr<std::unique_ptr<ZeroState>> Create(const model::ParamLayout& layout,
                                                           const config::ZeroConfig& config,
                                                           Communicator* dp, CommOptions comm,
                                                           Allocator* allocator);
  ~ZeroState() override;

  int stage() const { return config_.stage; }
  const Partition& partition() const { return partition_; }

  // Takes the initial parameters from `flat` (layout().total() floats on every rank; rank 0's
  // values win: DeepSpeed broadcasts them so "all ranks start equal" is a fact, not an
  // assumption). Collective.
  absl::Status SetParams(float* flat);
  // Writes the full parameters into `flat`. Collective in stage 3: every rank must call, and a
  // rank that does not want them passes null (it then holds one gathered module at a time).
  absl::Status GetParams(float* flat);

  // The step's phases, in order. BeginMicroBatch before each training Forward; FinishBackward
  // after each Backward; at the gradient-accumulation boundary ReduceGradients, then the global
  // gradient norm, AdamW and FinishStep.
  void BeginMicroBatch();
  absl::Status FinishBackward();
  absl::Status ReduceGradients();
  // Sum of squares of the averaged gradients over all ranks (collective from stage 1 on).
  absl::StatusOr<double> GradSquaredNorm();
  void AdamW(const kernels::AdamWArgs& args);
  absl::Status FinishStep();

  // Forward passes outside training (evaluation) neither record nor follow the stage-3 trace.
  void SetTraining(bool training) { training_ = training; }

  // ParamAccess.
  absl::StatusOr<const float*> AcquireParams(int module, model::Pass pass) override;
  absl::Status ReleaseParams(int module, model::Pass pass) override;
  absl::StatusOr<float*> AcquireGrads(int module) override;
  absl::Status ReleaseGrads(int module) override;

  const TrafficStats& traffic() const { return traffic_; }
  // Stage 3: how often the recorded module order was found stale and recorded again.
  int64_t trace_invalidations() const { return trace_invalidations_; }
  bool trace_complete() const { return trace_state_ == TraceState::kComplete; }
  bool unit_persistent(int unit) const { return units_[unit].persistent; }
  bool unit_gathered(int unit) const { return units_[unit].gathered.defined(); }

 private:
  enum class TraceState { kRecord, kComplete };
  struct UnitState {
    // Stage 2/3 gradient bucket: the unit's full padded gradients of this micro-batch.
    Tensor bucket;
    int grads_released = 0;        // modules of the unit whose gradients are complete
    std::unique_ptr<Work> reduce;  // the bucket's reduce-scatter in flight
    bool reduced = false;          // launched, not yet added into grads_
    // Stage 3.
    Tensor gathered;               // the unit's full padded parameters, when gathered
    std::unique_ptr<Work> gather;  // its all-gather in flight (a prefetch)
    int users = 0;                 // acquisitions not yet released
    bool persistent = false;       // kept gathered (small modules)
  };

  ZeroState(const model::ParamLayout& layout, const config::ZeroConfig& config, Communicator* dp,
            CommOptions comm, Allocator* allocator, Partition partition);
  int world() const { return partition_.world(); }
  bool distributed() const { return dp_ != nullptr && dp_->size() > 1; }
  absl::Status Wait(std::unique_ptr<Work>& work);

  // Stage 2/3 gradient path.
  absl::Status LaunchReduce(int unit);
  absl::Status CollectReduce(int unit);  // waits and adds the unit's chunk into grads_

  // Stage 3 parameter path.
  absl::Status StartGather(int unit);
  absl::Status EnsureGathered(int unit);
  void DropGathered(int unit);
  absl::Status Prefetch();
  bool KeepForReuse(int unit) const;
  void Trace(int unit);

  const model::ParamLayout& layout_;
  config::ZeroConfig config_;
  Communicator* dp_;  // null or size 1: single rank
  CommOptions comm_;
  Allocator* allocator_;
  Partition partition_;
  std::vector<UnitState> units_;
  std::deque<int> reducing_;  // units whose reduce-scatter was launched, oldest first

  Tensor params_;   // stages 0-2: padded space; stage 3: this rank's partition
  Tensor grads_;    // stages 0-1: padded space; stages 2-3: this rank's partition
  Tensor exp_avg_;  // this rank's partition (stage 0: padded space, one rank's all)
  Tensor exp_avg_sq_;
  bool grads_fresh_ = true;  // stages 2-3: no micro-batch has reduced into grads_ this step
  bool training_ = true;

  // Stage 3 trace of unit acquisitions in one training micro-batch.
  TraceState trace_state_ = TraceState::kRecord;
  std::vector<int> trace_, recording_;
  size_t trace_pos_ = 0;  // acquisitions so far in this micro-batch
  bool trace_broken_ = false;
  int64_t live_floats_ = 0;  // gathered or in flight
  int64_t trace_invalidations_ = 0;

  TrafficStats traffic_;
};

}  // namespace dstrain::zero
