// ZeroState: where the parameters, gradients and optimizer state of one data-parallel rank live
// for ZeRO stages 0–3, in fp32 or mixed precision, and the collectives that keep the ranks in step.
//
//   stage | parameters            | gradients                  | Adam state   | at the boundary
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
// Mixed precision (bf16 or fp16): parameters and gradients are stored, communicated and
// accumulated in 16 bits; fp32 master weights join the Adam moments as optimizer state (so the
// ZeRO paper's 2 + 2 + 12 bytes per parameter). The model still computes in fp32 on widened
// copies of the modules it is running (gathered_params), and its gradients land in an fp32
// scratch per module that is rounded into the 16-bit gradients when the module is done
// (comm_buffers). The 16-bit sum of squares is the overflow check (inf/NaN) as well as the norm.
//
// The model reaches parameters and gradients through the ParamAccess interface, which is what
// lets stage 3 gather a module just before it runs, prefetch the next ones along the order it
// recorded in the first micro-batch (re-recorded when the order changes), keep small modules
// resident, and free the rest, within stage3_max_live_parameters.
//
// Memory goes through the allocator by category: params, grads, optimizer_state (the ZeRO model
// states), comm_buffers (gradient buckets and scratch), gathered_params (modules gathered or
// widened for compute). Not thread-safe; one engine drives it.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/adamw/adamw.h"
#include "worker/comm/communicator.h"
#include "worker/config/config.h"
#include "worker/env/byte_source.h"
#include "worker/model/param_access.h"
#include "worker/model/param_layout.h"
#include "worker/tensor/tensor.h"
#include "worker/zero/partition.h"

namespace dstrain::zero {

struct ShardHeader;  // zero_state.cc

// Bytes this rank sent in its collectives, by the ring algorithms' count (nccl-tests' bus
// traffic): all-reduce of n bytes 2(N-1)/N·n, reduce-scatter and all-gather of n bytes (the full
// buffer) (N-1)/N·n, broadcast n·(N-1)/N.
struct TrafficStats {
  int64_t all_reduce = 0, reduce_scatter = 0, all_gather = 0, broadcast = 0;
  // Seconds this rank spent blocked waiting for its collectives to finish (the communication
  // time not overlapped with computation).
  double wait_seconds = 0;
  int64_t total() const { return all_reduce + reduce_scatter + all_gather + broadcast; }
};

// How gradients are averaged over the data-parallel ranks (DeepSpeed's communication_data_type,
// prescale_gradients, gradient_predivide_factor; reference §1.6).
struct GradientReduction {
  DType dtype = DType::kF32;  // what travels: f32, or the 16-bit storage type
  bool prescale = false;      // grad *= 1/N before the sum
  double predivide = 1.0;     // grad *= 1/f before the sum and *= f/N after (1: a plain mean)
};

class ZeroState final : public model::ParamAccess {
 public:
  // `dp` may be null (one rank). Errors: kResourceExhausted when memory runs out.
  // `storage` is the parameter and gradient dtype: kF32, or kBF16 / kF16 for mixed precision.
  static absl::StatusOr<std::unique_ptr<ZeroState>> Create(
      const model::ParamLayout& layout, const config::ZeroConfig& config, comm::Communicator* dp,
      comm::CommOptions comm, tensor::Allocator* allocator, DType storage = DType::kF32,
      GradientReduction reduction = {});
  ~ZeroState() override;

  int stage() const { return config_.stage; }
  DType storage() const { return storage_; }
  bool mixed() const { return storage_ != DType::kF32; }
  const Partition& partition() const { return partition_; }

  // Takes the initial parameters from `flat` (layout().total() floats on every rank; rank 0's
  // values win: DeepSpeed broadcasts them so "all ranks start equal" is a fact, not an
  // assumption). Collective.
  absl::Status SetParams(float* flat);
  // Writes the full fp32 parameters (mixed precision: the master weights) into `flat`.
  // Collective in stage 3 and, mixed, from stage 1 on: every rank must call, and a rank that
  // does not want them passes null (it then holds one unit at a time).
  absl::Status GetParams(float* flat);

  // The step's phases, in order. BeginMicroBatch before each training Forward; FinishBackward
  // after each Backward; at the gradient-accumulation boundary ReduceGradients, then the global
  // gradient norm, AdamW and FinishStep.
  void BeginMicroBatch();
  absl::Status FinishBackward();
  absl::Status ReduceGradients();
  // Sum of squares of the averaged gradients over all ranks (collective from stage 1 on); inf or
  // NaN when any rank's gradients hold an inf or NaN (the overflow check).
  absl::StatusOr<double> GradSquaredNorm();
  // The update; args.grad_scale unscales (1 / loss scale) and clips.
  void AdamW(const kernels::AdamWArgs& args);
  absl::Status FinishStep();
  // An overflowed step: drop the gradients, keep everything else.
  void SkipStep();
  // Makes this rank's first gradient inf, as an fp16 overflow would (tests of the skip path).
  void PoisonGradientsForTesting();

  // This rank's share of the training state, between steps, for its checkpoint shard: its chunks
  // of the parameters (mixed precision: of the fp32 master weights, from which the 16-bit working
  // copy is exactly the rounding) and of the Adam moments, after a header naming the stage, world,
  // rank and sizes. The header is appended to `head`; the views returned point into this
  // ZeroState's buffers (no copy of hundreds of MB) and stay valid until the next step.
  absl::StatusOr<std::vector<absl::string_view>> ShardPieces(std::string* head);
  // Restores, from the next bytes of `shard`, what ShardPieces gave on the same rank of the same
  // layout, stage, world size and precision (kFailedPrecondition otherwise). Reads straight into
  // this ZeroState's buffers; not collective. After an error the state is undefined (the caller
  // fails the load). Stages 1-2 then need GatherAfterLoad on every rank.
  absl::Status LoadShard(env::ByteSource& shard);
  // Collective from stage 1 on: brings back the parameters a rank keeps but does not own.
  // Gradients are zero afterwards, as after a step.
  absl::Status GatherAfterLoad();

  // Resharding. ShardToFlat scatters a shard that SaveShard wrote at any stage, world size, rank
  // and precision into full flat arrays (layout.total() floats each): the fp32 weights (the
  // parameters, or the master weights under mixed precision) and the two Adam moments; a shard
  // fills only its own chunks. `reduce_bucket_size` is the writer's (its stage 1-2 units).
  static absl::Status ShardToFlat(const model::ParamLayout& layout, absl::string_view shard,
                                  int64_t reduce_bucket_size, float* weights, float* m, float* v);
  // Takes full flat weights and moments: this rank keeps what its stage keeps.
  void LoadFull(const float* weights, const float* m, const float* v);

  // Forward passes outside training (evaluation) neither record nor follow the stage-3 trace.
  void SetTraining(bool training) { training_ = training; }

  // ParamAccess.
  absl::StatusOr<const float*> AcquireParams(int module, model::Pass pass) override;
  absl::Status ReleaseParams(int module, model::Pass pass) override;
  absl::StatusOr<float*> AcquireGrads(int module) override;
  absl::Status ReleaseGrads(int module) override;
  const uint16_t* Bf16Params(int module) override;
  void SetBf16OnlyParams(std::vector<int> params) override;
  bool FreshGrads(int module) override { return GradScratch() && !widen_ranges_.empty(); }

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
    tensor::Tensor bucket;
    int grads_released = 0;              // modules of the unit whose gradients are complete
    std::unique_ptr<comm::Work> reduce;  // the bucket's reduce-scatter in flight
    bool reduced = false;                // launched, not yet added into grads_
    // Stage 3: the unit's full padded parameters (storage dtype), when gathered.
    tensor::Tensor gathered;
    std::unique_ptr<comm::Work> gather;  // its all-gather in flight (a prefetch)
    int users = 0;                       // acquisitions not yet released
    bool persistent = false;             // kept gathered (small modules)
  };

  ZeroState(const model::ParamLayout& layout, const config::ZeroConfig& config,
            comm::Communicator* dp, comm::CommOptions comm, tensor::Allocator* allocator,
            Partition partition, DType storage, GradientReduction reduction);
  DType half() const { return storage_ == DType::kF16 ? DType::kF16 : DType::kBF16; }
  size_t elem() const { return DTypeSize(storage_); }
  // Element i of a storage-dtype tensor.
  void* At(tensor::Tensor& t, int64_t i) const { return static_cast<char*>(t.raw()) + i * elem(); }
  comm::CommBuffer Buf(tensor::Tensor& t, int64_t i, int64_t count) const {
    return comm::CommBuffer{At(t, i), count, storage_};
  }
  int64_t ModuleFloats(int module) const;
  static ShardHeader MakeHeader(const ZeroState& z);  // this rank's checkpoint-shard header
  // Whether the model's fp32 gradients of a module go through an fp32 scratch (rounded into 16
  // bits when the module is done) rather than straight into their destination.
  bool GradScratch() const { return config_.stage < 2 ? mixed() : reduction_.dtype != DType::kF32; }
  DType BucketType() const { return reduction_.dtype; }
  // The reduction of `count` elements at `data` (of dtype reduction_.dtype) before and after
  // the collective: scaling per prescale / predivide.
  void PreScale(void* data, int64_t count) const;
  void PostScale(void* data, int64_t count) const;
  // Where this rank's chunk of unit u sits in params_ / grads_ (element offsets).
  int64_t ParamChunk(const Unit& unit) const;
  int64_t GradChunk(const Unit& unit) const;
  int world() const { return partition_.world(); }
  bool distributed() const { return dp_ != nullptr && dp_->size() > 1; }
  absl::Status Wait(std::unique_ptr<comm::Work>& work);
  // Stages 1-2: every rank's parameter chunks to every rank (all-gather in place, waited for).
  absl::Status GatherOwnedChunks();

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
  comm::Communicator* dp_;  // null or size 1: single rank
  comm::CommOptions comm_;
  tensor::Allocator* allocator_;
  Partition partition_;
  std::vector<UnitState> units_;
  std::deque<int> reducing_;  // units whose reduce-scatter was launched, oldest first

  DType storage_;
  GradientReduction reduction_;
  comm::ReduceOp reduce_op_ = comm::ReduceOp::kAvg;  // kSum when prescaling or predividing
  double pre_scale_ = 1.0, post_scale_ = 1.0;
  tensor::Tensor params_;   // storage dtype; stages 0-2: padded space; stage 3: this rank's chunks
  tensor::Tensor grads_;    // storage dtype; stages 0-1: padded space; 2-3: this rank's chunks
  tensor::Tensor master_;   // mixed precision: fp32 weights of this rank's chunks
  tensor::Tensor exp_avg_;  // this rank's chunks (stage 0: the padded space, one rank's all)
  tensor::Tensor exp_avg_sq_;
  // Mixed precision, per module while the model runs it: the fp32 widening of its parameters
  // and the fp32 scratch its gradients accumulate in.
  struct ModuleState {
    tensor::Tensor widened;
    int users = 0;
    tensor::Tensor grad_scratch;
  };
  std::vector<ModuleState> modules_;
  // Per module, the ranges (module-relative floats) widened to fp32 for compute: all of it,
  // unless bf16 storage and SetBf16OnlyParams leave the matrix weights out.
  std::vector<std::vector<std::pair<int64_t, int64_t>>> widen_ranges_;
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
