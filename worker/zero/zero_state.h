// ZeroState: where the parameters, gradients and optimizer state of one data-parallel rank live
// for ZeRO stages 0–3, in fp32 or mixed precision, and the collectives that keep the ranks in step.
// Split by strategy, as DeepSpeed splits stage_1_and_2 from stage3 (docs/architecture.md, "ZeRO"):
//
//   class            | parameters            | gradients                  | at the boundary
//   Stage0 (stage0.h)| full                  | full, all-reduced          | -
//   Stage1And2       | full                  | stage 1: full, reduce-     | all-gather params
//   (stage_1_and_2.h)|                       | scattered; stage 2: own    |
//                    |                       | chunks, each unit reduce-  |
//                    |                       | scattered from a bucket as |
//                    |                       | backward ends it           |
//                    |                       | (gradient_buckets.h)       |
//   Stage3 (stage3.h)| own chunks; a module  | as stage 2, one unit per   | -
//                    | gathered while it     | module                     |
//                    | runs, prefetched along|                            |
//                    | the recorded order    |                            |
//                    | (param_coordinator.h) |                            |
//
// Adam's moments (and, mixed, the fp32 master weights) are always this rank's chunks only. The cut
// into units and chunks is partition.h's (Partition::ForStage, the one rule). "Full" buffers use
// the padded space, so a unit's reduce-scatter and all-gather run in place. Averaging is over the
// data-parallel ranks (ReduceOp::kAvg), as DeepSpeed divides by the data-parallel world size.
//
// Mixed precision (bf16 or fp16): parameters and gradients are stored and communicated in 16
// bits; fp32 master weights join the Adam moments as optimizer state (the ZeRO paper's 2 + 2 + 12
// bytes per parameter). The gradients are accumulated over a step's micro-batches in 16 bits too,
// or in fp32 under data_types.grad_accum_dtype "fp32" (DeepSpeed's default for bf16 at stage 0):
// then grads_ is fp32, the model adds into it directly at stages 0-1, and stages 2-3 add each
// micro-batch's reduced 16-bit bucket into it. The model computes on fp32 widenings of a running
// module's parameters (gathered_params), except that under bf16 storage the matrix weights are
// handed out in bf16 (the matrix products take them directly), and its gradients land in an fp32
// scratch per module that is rounded into the 16-bit gradients when the module is done
// (comm_buffers). The gradients' sum of squares is the overflow check (inf/NaN) as well as the
// norm.
//
// Everything runs through the rank's device::Ops (no kernel is named here) and its allocator by
// category: params, grads, optimizer_state (the ZeRO model states), comm_buffers (gradient
// buckets, scratch), gathered_params (modules gathered or widened for compute). Collectives run on
// the device's communication stream, ordered after the computation that produced their input and
// before the one that reads their output. Not thread-safe; one engine drives it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/config/config.h"
#include "worker/device/ops.h"
#include "worker/env/byte_source.h"
#include "worker/model/param_access.h"
#include "worker/model/param_layout.h"
#include "worker/tensor/arena_allocator.h"
#include "worker/tensor/tensor.h"
#include "worker/zero/optimizer_home.h"
#include "worker/zero/optimizer_swap.h"
#include "worker/zero/param_swap.h"
#include "worker/zero/partition.h"
#include "worker/zero/precision.h"

namespace dstrain::zero {

struct ShardHeader;  // zero_state_shards.cc
class GradientBuckets;

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
// prescale_gradients, gradient_predivide_factor; docs/configuration.md).
struct GradientReduction {
  DType dtype = DType::kF32;  // what travels: f32, or the 16-bit storage type
  bool prescale = false;      // grad *= 1/N before the sum
  double predivide = 1.0;     // grad *= 1/f before the sum and *= f/N after (1: a plain mean)
  // data_types.grad_accum_dtype: what a step's gradients are summed in over its micro-batches,
  // f32 or the storage dtype; nullopt is DeepSpeed's None (GradAccumulationDType).
  std::optional<DType> accumulate;
};

// Reduces one float over `group` in place (host memory), through `ops`'s device: straight from
// host memory on the CPU, through `*device_scalar` (allocated on first use, under kCommBuffers)
// where the host cannot address device memory. Waits for the result.
absl::Status AllReduceScalar(comm::Communicator& group, device::Ops& ops,
                             tensor::Tensor* device_scalar, float* value, comm::ReduceOp op,
                             const comm::CommOptions& options);
// The same for `n` floats at `values`; `*device_buffer` is (re)allocated to fit.
absl::Status AllReduceHostFloats(comm::Communicator& group, device::Ops& ops,
                                 tensor::Tensor* device_buffer, float* values, int64_t n,
                                 comm::ReduceOp op, const comm::CommOptions& options);
// An all-gather in place of host floats: `all` holds group.size() slots of `per_rank` floats and
// this rank has filled its own; afterwards every slot holds its rank's. Raw bits travel (a gather
// copies, never adds). Through a device buffer where the group needs one, as above.
absl::Status AllGatherHostFloats(comm::Communicator& group, device::Ops& ops, float* all,
                                 int64_t per_rank, const comm::CommOptions& options);

// What an offloaded optimizer needs beyond the configuration (docs/offload.md): where its files
// go (<nvme_path>/dstrain-<job>/rank<rank>), how the disk is driven, and where the start-up
// lines go (the bandwidth self-test, notes).
struct OffloadContext {
  std::string job = "job";
  // Host memory for the state and its staging on a GPU rank (accounted by category); null: the
  // ZeroState's own, page-locked where offload_optimizer.pin_memory says so (the device's
  // NewPinnedHostAllocator). Must outlive the ZeroState.
  tensor::Allocator* host = nullptr;
  int rank = -1;  // the process's rank in the job; -1: the data-parallel rank
  config::AioConfig aio;
  std::function<void(const std::string&)> log;
  // Tests: the swap engine's I/O queues (a FaultInjectionQueue); default io_uring.
  std::function<absl::StatusOr<std::unique_ptr<offload::IoQueue>>(int depth)> make_queue;
};

class ZeroState : public model::ParamAccess {
 public:
  // The strategy for config.stage. `dp` may be null (one rank); `ops` (not owned) is the rank's
  // device. `storage` is the parameter and gradient dtype: kF32, or kBF16 / kF16 for mixed
  // precision; `reduction.accumulate`, f32 or `storage`, the gradients' dtype. Errors:
  // kInvalidArgument for a stage or dtype combination that does not exist,
  // kResourceExhausted when memory runs out.
  static absl::StatusOr<std::unique_ptr<ZeroState>> Create(
      const model::ParamLayout& layout, const config::ZeroConfig& config, comm::Communicator* dp,
      comm::CommOptions comm, device::Ops* ops, DType storage = DType::kF32,
      GradientReduction reduction = {}, OffloadContext offload = {});
  ~ZeroState() override;

  int stage() const { return config_.stage; }
  DType storage() const { return storage_; }
  // What the gradients are accumulated in: f32, or the storage dtype (GradientReduction).
  DType grads_dtype() const { return grads_dtype_; }
  bool mixed() const { return storage_ != DType::kF32; }
  const Partition& partition() const { return partition_; }
  // The optimizer state's home: kNvme when it lives in swap files (optimizer_swap.h), kCpu in
  // host memory beside a GPU (optimizer_home.h), else kNone: the rank's own buffers (on a CPU
  // rank "cpu" is that already).
  config::OffloadDevice optimizer_home() const {
    return home_ != nullptr ? home_->device() : config::OffloadDevice::kNone;
  }
  // The host memory an offloaded optimizer keeps beside a GPU (its state and staging), by
  // category; null where there is none.
  const tensor::Allocator* host_allocator() const {
    return (home_ != nullptr || params_on_host_ || param_swap_ != nullptr) &&
                   !ops_->host_accessible()
               ? host_
               : nullptr;
  }
  // zero_optimization.offload_param.device "cpu" on a GPU rank: this rank's parameter partition
  // is in host memory.
  bool params_on_host() const { return params_on_host_; }
  // offload_param.device "nvme": this rank's parameter partition is in a swap file.
  bool params_on_nvme() const { return param_swap_ != nullptr; }
  // NVMe parameter offload: the parameter swap file's bytes and what the gathers and updates
  // moved through it since the last call (bytes read and written, seconds gathers waited).
  int64_t param_file_bytes() const { return param_swap_ ? param_swap_->file_bytes() : 0; }
  struct ParamSwapTraffic {
    int64_t bytes = 0;
    double wait_seconds = 0;
  };
  ParamSwapTraffic TakeParamSwapTraffic();
  // NVMe offload: the swap file's bytes and the last update's I/O seconds (total, unhidden).
  int64_t swap_file_bytes() const;
  double swap_wait_seconds() const;
  // NVMe offload: the last update's wall time (I/O and arithmetic) and bytes moved.
  double swap_update_seconds() const { return swap_ ? swap_->last_update_seconds() : 0; }
  int64_t swap_update_bytes() const { return swap_ ? swap_->last_update_bytes() : 0; }
  device::Ops& ops() const { return *ops_; }

  // Takes the initial parameters from `flat` (layout().total() f32 on the device, on every
  // rank; rank 0's values win: DeepSpeed broadcasts them so "all ranks start equal" is a fact,
  // not an assumption). Collective.
  absl::Status SetParams(tensor::View flat);
  // Writes the full fp32 parameters (mixed precision: the master weights) into `flat`
  // (layout().total() f32 on the device). Collective in stage 3 and, mixed, from stage 1 on:
  // every rank must call, and a rank that does not want them passes an empty view.
  virtual absl::Status GetParams(tensor::View flat) = 0;

  // The step's phases, in order. BeginMicroBatch before each training Forward; FinishBackward
  // after each Backward; at the gradient-accumulation boundary ReduceGradients, then the global
  // gradient norm, AdamW and FinishStep.
  virtual void BeginMicroBatch() {}
  // Whether the coming Backward is the step's last micro-batch. Stages 2-3 with the optimizer
  // state in host memory beside a GPU then stream each unit's reduced gradients to the host as
  // backward finishes it (docs/offload.md, "Host offload"), instead of at the update.
  void SetBoundaryBackward(bool last) { boundary_backward_ = last; }
  virtual absl::Status FinishBackward() { return ops_->status(); }
  virtual absl::Status ReduceGradients() = 0;
  // Sum of squares of the averaged gradients over all ranks (collective from stage 1 on); inf or
  // NaN when any rank's gradients hold an inf or NaN (the overflow check).
  virtual absl::StatusOr<double> GradSquaredNorm();
  // The update; args.grad_scale unscales (1 / loss scale) and clips. It runs over this rank's
  // partition unit by unit, in sub-groups of at most sub_group_size elements.
  absl::Status AdamW(const device::AdamWArgs& args);
  // The sub-groups the last AdamW updated.
  int64_t optimizer_sub_groups() const { return optimizer_sub_groups_; }
  virtual absl::Status FinishStep() = 0;
  // An overflowed step: drop the gradients, keep everything else.
  void SkipStep();
  // Makes this rank's first gradient inf, as an fp16 overflow would (tests of the skip path).
  void PoisonGradientsForTesting();

  // This rank's share of the training state, between steps, for its checkpoint shard: its chunks
  // of the parameters (mixed precision: of the fp32 master weights, from which the 16-bit working
  // copy is exactly the rounding) and of the Adam moments, after a header naming the stage, world,
  // rank and sizes. The header is appended to `head`; the chunks are host memory, valid until the
  // next call (this ZeroState's buffers on the CPU, a staging copy else; under NVMe offload,
  // pieces of the swap file read one at a time), and the source is used before the next step.
  absl::StatusOr<env::ChunkSource> ShardChunks(std::string* head);
  // Restores, from the next bytes of `shard`, what ShardChunks gave on the same rank of the same
  // layout, stage, world size and precision (kFailedPrecondition otherwise). Not collective.
  // After an error the state is undefined (the caller fails the load). Stages 1-2 then need
  // GatherAfterLoad on every rank.
  absl::Status LoadShard(env::ByteSource& shard);
  // Collective from stage 1 on: brings back the parameters a rank keeps but does not own.
  // Gradients are zero afterwards, as after a step.
  virtual absl::Status GatherAfterLoad() { return absl::OkStatus(); }

  // Pipeline parallelism's tied weights. ReduceParamGrads sums parameter `param`'s gradients of
  // this step over `group` (the stages holding a copy), in place; stages 0-1 only, whose
  // gradients are whole until ReduceGradients (kFailedPrecondition otherwise). Collective over
  // `group`. ExcludeFromNorm leaves `module`'s gradients out of GradSquaredNorm (a copy another
  // stage counts).
  absl::Status ReduceParamGrads(const model::ParamSpec& param, comm::Communicator& group);
  void ExcludeFromNorm(int module);

  // Resharding (docs/checkpoints.md), without the whole state in memory. A shard's header (what
  // ShardChunks wrote first), read from the front of `shard` and checked against `layout` and
  // the size left: the writer's stage, storage dtype and partition (Partition::ForStage with its
  // `reduce_bucket_size`). Three arrays follow it, partition.owned_total() floats each: the fp32
  // weights (the parameters, or the master weights under mixed precision), Adam's m and v; piece
  // p of partition.OwnedPieces() sits at p.at in each. kDataLoss for a damaged header or size,
  // kFailedPrecondition for a shard of another model.
  struct ShardLayout {
    int stage = 0;
    DType storage = DType::kF32;
    Partition partition;
  };
  static absl::StatusOr<ShardLayout> ReadShardHeader(const model::ParamLayout& layout,
                                                     env::ByteSource& shard,
                                                     int64_t reduce_bucket_size);
  // This rank's state from flat ranges of the layout, range by range: BeginStoreOwned zeroes it;
  // StoreOwned reads floats [flat, flat + count) of array 0 (the fp32 weights), 1 (m) or 2 (v)
  // from `source` into this rank's chunks (the range lies within one of partition().
  // OwnedPieces()), straight into the buffers where the host reaches them, else through a
  // staging buffer of at most kStoreStagingFloats; FinishStoreOwned rounds the master weights
  // into the 16-bit working copy under mixed precision. Between steps only; not collective; stages
  // 1-2 then need GatherAfterLoad. After an error the state is undefined.
  static constexpr int64_t kStoreStagingFloats = int64_t{1} << 20;
  absl::Status BeginStoreOwned();
  absl::Status StoreOwned(int array, int64_t flat, int64_t count, env::ByteSource& source);
  absl::Status FinishStoreOwned();

  // Forward passes outside training (evaluation) neither record nor follow the stage-3 trace.
  virtual void SetTraining(bool /*training*/) {}

  // ParamAccess.
  absl::StatusOr<model::ModuleParams> AcquireParams(int module, model::Pass pass) override;
  absl::Status ReleaseParams(int module, model::Pass pass) override;
  absl::StatusOr<model::ModuleGrads> AcquireGrads(int module) override;
  absl::Status ReleaseGrads(int module) override;

  const TrafficStats& traffic() const { return traffic_; }

 protected:
  ZeroState(const model::ParamLayout& layout, const config::ZeroConfig& config,
            comm::Communicator* dp, comm::CommOptions comm, device::Ops* ops, Partition partition,
            DType storage, GradientReduction reduction, bool params_partitioned,
            bool grads_partitioned);
  // Allocates the buffers every strategy has (params, grads, optimizer state), the optimizer
  // state in swap files under zero_optimization.offload_optimizer.device "nvme".
  absl::Status Allocate(const OffloadContext& offload);

  // ---- what a strategy supplies ----
  // The module's parameters in their storage dtype, laid out as the flat layout from the
  // module's first float; acquired for `pass` (stage 3 gathers here).
  virtual absl::StatusOr<tensor::View> ModuleStorage(int module, model::Pass pass) = 0;
  // The module's parameters are no longer used by the model (after its widening is released).
  virtual absl::Status ParamsReleased(int module) = 0;
  // Where the module's gradients of this micro-batch go (the flat layout from its first float):
  // grads_ in the padded space, or a bucket (stages 2-3). f32 there means the model writes into
  // it directly; a 16-bit destination gets an fp32 scratch rounded into it on release. Every part
  // accumulates (+=) onto what it holds, except that where `unwritten` is given, a
  // bucket made for this micro-batch hands over the module's matrix parts unwritten the first
  // time (*unwritten true), for the model to overwrite (model::ModuleGrads::fresh).
  virtual absl::StatusOr<tensor::View> GradTarget(int module, bool* unwritten) = 0;
  // The module's gradients of this micro-batch are complete (stages 2-3 reduce full buckets).
  virtual absl::Status GradsDone(int /*module*/) { return absl::OkStatus(); }
  // Between steps: no module acquired, no reduction in flight (checkpoints need this).
  virtual bool Idle() const = 0;
  // Gathered copies of parameters are stale (the parameters are about to change).
  virtual void DropGathered() {}
  // The views whose sum of squares is this rank's share of the gradient norm.
  virtual std::vector<tensor::View> NormViews() = 0;
  // NormViews, or with a module left out (ExcludeFromNorm): this rank's gradient chunks unit by
  // unit, each cut around the module's flat range.
  std::vector<tensor::View> LocalNormViews();

  // ---- shared pieces ----
  // Where this rank's chunk of unit u sits in params_ / grads_ (element offsets).
  int64_t ParamChunk(const Unit& unit) const {
    return params_partitioned_ ? unit.owned_offset
                               : unit.padded_offset + partition_.rank() * unit.chunk;
  }
  int64_t GradChunk(const Unit& unit) const {
    return grads_partitioned_ ? unit.owned_offset
                              : unit.padded_offset + partition_.rank() * unit.chunk;
  }
  int world() const { return partition_.world(); }
  // Zeroes `buffer`, which holds the flat layout from element `base` on, everywhere but the
  // matrix parameters of modules [first_module, end_module): a fresh gradient buffer's parts
  // that accumulate (padding included).
  void ZeroAroundMatrices(const tensor::View& buffer, int64_t base, int first_module,
                          int end_module);
  // offload_param "nvme": the parameter partition's swap (stage 3's gathers read it); else null.
  ParamSwap* param_swap() const { return param_swap_.get(); }
  bool distributed() const { return dp_ != nullptr && dp_->size() > 1; }
  int64_t ModuleFloats(int module) const { return layout_.modules()[module].numel; }
  // A buffer for a collective: the view on the device's communication stream.
  comm::CommBuffer Buf(const tensor::View& v) const;
  // Orders the communication stream after the computation issued so far; call before launching
  // a collective whose input the computation produced.
  void BeforeCollective() { ops_->WaitFor(device::Stream::kComm, device::Stream::kCompute); }
  // Waits for a collective (counting the time as unhidden communication) and orders the
  // computation after it.
  absl::Status Wait(std::unique_ptr<comm::Work>& work);
  // Launches the average of a unit's gradients `whole` (its padded space, reduction_.dtype),
  // of which this rank keeps `mine` (its chunk, inside `whole`): a reduce-scatter, or an
  // all-reduce in place under reduce_scatter: false (stages 1-2).
  absl::StatusOr<std::unique_ptr<comm::Work>> ReduceUnit(const tensor::View& whole,
                                                         const tensor::View& mine);
  // The reduction's scaling of `v` (reduction_.dtype) before and after the collective.
  void PreScale(const tensor::View& v) const;
  void PostScale(const tensor::View& v) const;
  // Every rank's parameter chunks to every rank (stages 1-2: all-gather in place, waited for).
  absl::Status GatherOwnedChunks();
  // A host f32 array of the whole layout as a device view: itself on the CPU, else a copy in
  // `staging`.
  absl::StatusOr<tensor::View> FlatOnDevice(const float* host, tensor::Tensor& staging);
  // params_ from a full flat f32 array on the device (rounded under mixed precision), in the
  // layout this strategy keeps; padding zero.
  absl::Status FillParamsFromFlat(const tensor::View& flat);
  // Mixed precision: every rank's fp32 master chunks, unit by unit, into `flat` (empty: take part
  // only). Collective from stage 1 on.
  absl::Status GatherMasterInto(const tensor::View& flat);
  // The module's slice of a buffer in the padded space (params_ or grads_ of stages 0-2).
  tensor::View PaddedModule(const tensor::Tensor& buffer, int module) const;
  // Stages 0-2: the full parameters of the padded space into `flat` (empty: nothing to do);
  // mixed precision: the gathered master weights (GatherMasterInto).
  absl::Status PaddedParamsInto(const tensor::View& flat);
  // The full gradients as they travel at the boundary (stages 0-1): grads_ itself, or a copy
  // converted to communication_data_type in `copy`. ReducedIntoGrads then brings a copy's
  // averaged range back into grads_.
  absl::StatusOr<tensor::View> ReductionBuffer(tensor::Tensor& copy);
  void ReducedIntoGrads(const tensor::View& grads, const tensor::View& reduced);

  const model::ParamLayout& layout_;
  const config::ZeroConfig config_;
  comm::Communicator* const dp_;  // null or size 1: single rank
  const comm::CommOptions comm_;
  device::Ops* const ops_;
  const Partition partition_;
  const DType storage_;
  const DType grads_dtype_;  // f32 or storage_ (data_types.grad_accum_dtype)
  const GradientReduction reduction_;
  comm::ReduceOp reduce_op_ = comm::ReduceOp::kAvg;  // kSum when prescaling or predividing
  double pre_scale_ = 1.0, post_scale_ = 1.0;
  const bool params_partitioned_;  // params_ holds this rank's chunks (else the padded space)
  // offload_param "cpu" on a GPU rank (stage 3): params_ is host memory from host_, reached by
  // the device through copies (ParamsFromF32, the gather's copy in Stage3::StartGather).
  bool params_on_host_ = false;
  const bool grads_partitioned_;  // grads_ likewise
  // A CPU rank whose data-parallel group shares host buffers (the shared-memory backend,
  // Communicator::SharesHostBuffers): the buffers its collectives run on (params_ and grads_ of
  // stages 0-2, or the reduction's copy; params_ of stage 3; the gradient buckets) are carved from
  // one such buffer, so they travel without staging copies (docs/shm.md, "Shared buffers").
  // Declared before them, so destroyed after them.
  std::unique_ptr<comm::HostBuffer> comm_window_;
  std::unique_ptr<tensor::ArenaAllocator> comm_arena_;
  // Where those buffers come from: the arena, or the device's allocator.
  tensor::Allocator* comm_allocator() const {
    return comm_arena_ != nullptr ? static_cast<tensor::Allocator*>(comm_arena_.get())
                                  : ops_->allocator();
  }
  // Makes comm_window_ and comm_arena_ where the group shares host buffers (collective).
  absl::Status AllocateCommWindow(const OffloadContext& offload, int64_t param_elems);
  // Stages 1-3 gather params_ (not offloaded): it goes in the window too.
  bool ParamsInCommWindow() const {
    return config_.stage >= 1 && config_.offload_param.device == config::OffloadDevice::kNone;
  }
  tensor::Tensor params_;   // storage dtype
  tensor::Tensor grads_;    // grads_dtype_
  tensor::Tensor master_;   // mixed precision: fp32 weights of this rank's chunks
  tensor::Tensor exp_avg_;  // this rank's chunks (stage 0: one rank's all)
  tensor::Tensor exp_avg_sq_;
  tensor::Tensor scalar_;   // the norm's all-reduce on a device without host access
  int norm_excluded_ = -1;  // a module left out of the norm, or -1
  TrafficStats traffic_;

 private:
  friend class GradientBuckets;
  // Mixed precision, per module while the model runs it: the fp32 widening of its parameters
  // (those not handed out in 16 bits) and the fp32 scratch its gradients accumulate in.
  struct ModuleState {
    tensor::Tensor widened;
    int users = 0;
    tensor::Tensor grad_scratch;
  };
  // The update's cut of this rank's owned elements: windows of at most sub_group_size elements,
  // unit by unit (one pass over everything where parameters and gradients are both partitioned),
  // with where each window's parameters and gradients sit in params_ and grads_.
  struct UpdateWindow {
    int64_t owned_at, len, param_at, grad_at;
  };
  std::vector<UpdateWindow> UpdateWindows() const;
  absl::Status AllocateSwap(const OffloadContext& offload);
  // offload_param "nvme": the parameter swap (and its directory, shared with the optimizer's when
  // both name one nvme_path) with its buffers from `host`.
  absl::Status AllocateParamSwap(const OffloadContext& offload, tensor::Allocator* host);
  absl::Status EnsureSwapEngine(const OffloadContext& offload);
  absl::Status AllocateHost(const OffloadContext& offload);
  // The update with the state in its home on a GPU rank: per window, the gradients (and fp32
  // weights) to the host, the CPU's AdamW there, the new weights back.
  absl::Status AdamWOnHost(const device::AdamWArgs& args);
  // Partial offload (offload_optimizer.ratio < 1, docs/offload.md): the first windows keep their
  // state in the device buffers, the rest in the home. The device holds owned elements
  // [0, device_state_) of each optimizer array, the home [device_state_, owned_total) at home
  // offsets counted from device_state_; without a home device_state_ is owned_total.
  int first_home_window_ = 0;
  int64_t device_state_ = 0;
  // Optimizer array `which` (0: master weights, 1: m, 2: v) of the device's part.
  tensor::View DeviceState(int which) const;
  // Floats [at, at + n) of optimizer array `which` in the owned space, wherever they live, out
  // of or into `view` (device memory), or from the next bytes of `source`.
  absl::Status StateToView(int which, int64_t at, const tensor::View& dst);
  absl::Status ViewToState(int which, int64_t at, const tensor::View& src);
  absl::Status SourceToState(env::ByteSource& source, int which, int64_t at, int64_t n);
  // Floats [at, at + n) of optimizer array `which` in its home (home offsets), out of or into
  // `view` (device memory on a GPU rank: through a bounded host staging buffer).
  absl::Status HomeToView(int which, int64_t at, const tensor::View& dst);
  absl::Status ViewToHome(int which, int64_t at, const tensor::View& src);
  // Optimizer array `which` (0: master weights, 1: m, 2: v) in the swap file's numbering.
  int SwapArray(int which) const { return mixed() ? which : which - 1; }
  // Mixed precision: params_'s chunks from the master weights (their rounding).
  absl::Status ParamsFromMaster();
  // params_[at, at + n) = the rounding to the storage dtype of `src` (n f32 on the device),
  // wherever params_ lives.
  absl::Status ParamsFromF32(int64_t at, const tensor::View& src);
  // Every parameter element this rank keeps (padding included) zero, wherever they live.
  absl::Status ZeroParams();
  // NVMe parameters: elements [at, at + n) of the owned space from the next bytes of `source`.
  absl::Status ParamsFromSource(env::ByteSource& source, int64_t at, int64_t n);
  // The AdamW of one window whose parameters are in the swap: kParamUpdatePieceFloats at a time
  // through `staging` in host memory (and `on_device` on a GPU rank), each made or grown here and
  // kept by the caller for the next window; the other views are the window's.
  absl::Status AdamWSwappedParams(int64_t param_at, const tensor::View& master,
                                  const tensor::View& g, const tensor::View& m,
                                  const tensor::View& v, const device::AdamWArgs& args,
                                  tensor::Tensor& staging, tensor::Tensor& on_device);
  // The ops that reach params_ directly: the host's under offload_param, else the device's.
  device::Ops& ParamOps() const { return params_on_host_ ? *host_ops_ : *ops_; }
  // The bytes of `views` as host memory: the views themselves where the host reaches them, else
  // copies in host_staging_ (valid until its next use).
  absl::StatusOr<std::vector<absl::string_view>> HostPieces(const std::vector<tensor::View>& views);
  // The master weights of owned elements [at, at + n) into `dst` (on the device), from wherever
  // they live.
  absl::Status ReadMaster(int64_t at, const tensor::View& dst);
  // Offload: optimizer array `which` of home elements [at, at + n) from the next bytes of
  // `source`, through a bounded staging buffer.
  absl::Status SwapInFrom(env::ByteSource& source, int which, int64_t at, int64_t n);
  // The next dst.bytes() of `source` into `dst` (f32), through a bounded staging buffer where the
  // host cannot address the device.
  absl::Status ReadIntoView(env::ByteSource& source, const tensor::View& dst);
  absl::StatusOr<env::ChunkSource> SwappedShardChunks();
  static constexpr int64_t kSwapSelfTestBytes = int64_t{64} << 20;
  static constexpr int64_t kParamSelfTestBytes = int64_t{16} << 20;
  // Offload. Host memory first (what follows allocates from it, so goes first): the rank's own
  // on a CPU rank, else the context's or own_host_ (page-locked under pin_memory).
  std::unique_ptr<tensor::Allocator> own_host_;
  tensor::Allocator* host_ = nullptr;
  std::unique_ptr<offload::SwapEngine> swap_engine_;
  std::unique_ptr<offload::SwapDir> swap_dir_;
  // The state's home (optimizer_home.h), and the same as an OptimizerSwap under NVMe.
  std::unique_ptr<OptimizerHome> home_;
  OptimizerSwap* swap_ = nullptr;
  // offload_param "nvme" (stage 3): the parameter partition's swap file (params_ is then empty),
  // in param_dir_ or, when both offloads name one nvme_path, in swap_dir_.
  std::unique_ptr<offload::SwapDir> param_dir_;
  std::unique_ptr<ParamSwap> param_swap_;
  int64_t param_swap_bytes_seen_ = 0;
  // A GPU rank's update on the host: the CPU kernels, and two windows' gradients and weights in
  // transit (one being updated while the next one's cross).
  std::unique_ptr<device::Ops> host_ops_;
  tensor::Tensor host_grad_[2], host_param_[2];
  // Stages 2-3 beside a GPU: the home's gradients (owned [device_state_, owned_total)), streamed
  // in by GradientBuckets as the boundary micro-batch's backward reduces each unit, and the
  // fences of those copies, waited for by the update (or by SkipStep).
  bool stream_grads_ = false;
  bool boundary_backward_ = false;
  tensor::Tensor host_grads_;
  std::vector<int> streamed_fences_;
  // Queues the copy of `unit`'s reduced gradients (its home part) to host_grads_.
  void StreamUnitGrads(const Unit& unit);
  absl::Status WaitStreamedGrads();
  std::vector<UpdateWindow> windows_;
  // Whether parameter i is handed out in its 16-bit storage (bf16 matrix weights).
  bool Direct16(int param) const;
  std::vector<char> host_staging_;   // ShardChunks / LoadShard on a device without host access
  std::vector<Piece> store_pieces_;  // BeginStoreOwned .. FinishStoreOwned: partition_'s owned
  std::vector<ModuleState> modules_;
  int64_t optimizer_sub_groups_ = 0;
};

}  // namespace dstrain::zero
