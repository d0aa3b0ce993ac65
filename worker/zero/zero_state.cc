#include "worker/zero/zero_state.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "kernels/residual/residual.h"

namespace dstrain::zero {
namespace {

CommBuffer F32(float* data, int64_t count) { return CommBuffer{data, count, DType::kF32}; }

// Stage 3 keeps a module gathered when every parameter in it is small (DeepSpeed's
// stage3_param_persistence_threshold, per parameter), while the persistent total stays within
// stage3_model_persistence_threshold. DeepSpeed decides per parameter; we gather whole modules,
// so a small parameter inside a large module travels in that module's one all-gather instead.
std::vector<bool> PersistentUnits(const model::ParamLayout& layout, const Partition& p,
                                  const config::ZeroConfig& c) {
  std::vector<bool> persistent(p.units().size(), false);
  int64_t total = 0;
  for (size_t u = 0; u < p.units().size(); ++u) {
    const Unit& unit = p.units()[u];
    int64_t largest = 0, numel = 0;
    for (int m = unit.first_module; m < unit.end_module; ++m) {
      for (int i : layout.modules()[m].params) {
        largest = std::max(largest, layout.params()[i].numel);
        numel += layout.params()[i].numel;
      }
    }
    if (largest <= c.param_persistence_threshold &&
        total + numel <= c.model_persistence_threshold) {
      persistent[u] = true;
      total += numel;
    }
  }
  return persistent;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ZeroState>> ZeroState::Create(const model::ParamLayout& layout,
                                                             const config::ZeroConfig& config,
                                                             Communicator* dp, CommOptions comm,
                                                             Allocator* allocator) {
  if (config.stage < 0 || config.stage > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("zero_optimization.stage: ", config.stage, " is not 0, 1, 2 or 3"));
  }
  const int world = dp != nullptr ? dp->size() : 1;
  const int rank = dp != nullptr ? dp->rank() : 0;
  Partition partition;
  switch (config.stage) {
    case 0:  // nothing partitioned: one unit, one "rank"
      partition = Partition::Build(layout, 1, 0, std::numeric_limits<int64_t>::max());
      break;
    case 1:
    case 2:  // units are DeepSpeed's reduce buckets
      partition = Partition::Build(layout, world, rank, config.reduce_bucket_size);
      break;
    default:  // stage 3 gathers module by module
      partition = Partition::Build(layout, world, rank, 1);
      break;
  }
  std::unique_ptr<ZeroState> z(
      new ZeroState(layout, config, dp, comm, allocator, std::move(partition)));
  const Partition& p = z->partition_;
  if (config.stage == 3) {
    const std::vector<bool> persistent = PersistentUnits(layout, p, config);
    for (size_t u = 0; u < persistent.size(); ++u) z->units_[u].persistent = persistent[u];
  }
  const int64_t param_floats = config.stage == 3 ? p.owned_total() : p.padded_total();
  const int64_t grad_floats = config.stage >= 2 ? p.owned_total() : p.padded_total();
  DT_ASSIGN_OR_RETURN(
      z->params_, Tensor::Zeros(allocator, DType::kF32, {param_floats}, MemoryCategory::kParams));
  DT_ASSIGN_OR_RETURN(z->grads_,
                      Tensor::Zeros(allocator, DType::kF32, {grad_floats}, MemoryCategory::kGrads));
  DT_ASSIGN_OR_RETURN(z->exp_avg_, Tensor::Zeros(allocator, DType::kF32, {p.owned_total()},
                                                 MemoryCategory::kOptimizerState));
  DT_ASSIGN_OR_RETURN(z->exp_avg_sq_, Tensor::Zeros(allocator, DType::kF32, {p.owned_total()},
                                                    MemoryCategory::kOptimizerState));
  return z;
}

ZeroState::ZeroState(const model::ParamLayout& layout, const config::ZeroConfig& config,
                     Communicator* dp, CommOptions comm, Allocator* allocator, Partition partition)
    : layout_(layout),
      config_(config),
      dp_(dp),
      comm_(comm),
      allocator_(allocator),
      partition_(std::move(partition)),
      units_(partition_.units().size()) {}

ZeroState::~ZeroState() {
  // A collective still in flight writes into buffers about to be freed: wait for it first.
  for (UnitState& u : units_) {
    if (u.reduce) (void)u.reduce->Wait();
    if (u.gather) (void)u.gather->Wait();
  }
}

absl::Status ZeroState::Wait(std::unique_ptr<Work>& work) {
  if (!work) return absl::OkStatus();
  absl::Status status = work->Wait();
  work.reset();
  return status;
}

absl::Status ZeroState::SetParams(float* flat) {
  if (distributed()) {
    const int64_t n = layout_.total();
    DT_ASSIGN_OR_RETURN(auto work, dp_->Broadcast(F32(flat, n), /*root=*/0, comm_));
    DT_RETURN_IF_ERROR(work->Wait());
    traffic_.broadcast += n * 4 * (dp_->size() - 1) / dp_->size();
  }
  if (config_.stage == 3) {
    partition_.FlatToOwned(flat, params_.data<float>());
  } else {
    partition_.FlatToPadded(flat, params_.data<float>());
  }
  return absl::OkStatus();
}

absl::Status ZeroState::GetParams(float* flat) {
  if (config_.stage < 3) {
    if (flat != nullptr) partition_.PaddedToFlat(params_.data<float>(), flat);
    return absl::OkStatus();
  }
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
    DT_RETURN_IF_ERROR(EnsureGathered(u));
    if (flat != nullptr) partition_.UnitToFlat(u, units_[u].gathered.data<float>(), flat);
    if (units_[u].users == 0 && !units_[u].persistent) DropGathered(u);
  }
  return absl::OkStatus();
}

// ---- ParamAccess ----

absl::StatusOr<const float*> ZeroState::AcquireParams(int module, model::Pass) {
  const int u = partition_.unit_of_module(module);
  const Unit& unit = partition_.units()[u];
  const int64_t off = layout_.modules()[module].offset - unit.begin;
  if (config_.stage < 3) return params_.data<float>() + unit.padded_offset + off;
  Trace(u);
  DT_RETURN_IF_ERROR(EnsureGathered(u));
  ++units_[u].users;
  DT_RETURN_IF_ERROR(Prefetch());
  return units_[u].gathered.data<float>() + off;
}

absl::Status ZeroState::ReleaseParams(int module, model::Pass) {
  if (config_.stage < 3) return absl::OkStatus();
  const int u = partition_.unit_of_module(module);
  UnitState& s = units_[u];
  if (s.users <= 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("ReleaseParams: module ", layout_.modules()[module].name, " is not acquired"));
  }
  if (--s.users == 0 && !s.persistent && !KeepForReuse(u)) DropGathered(u);
  return absl::OkStatus();
}

absl::StatusOr<float*> ZeroState::AcquireGrads(int module) {
  const int u = partition_.unit_of_module(module);
  const Unit& unit = partition_.units()[u];
  const int64_t off = layout_.modules()[module].offset - unit.begin;
  if (config_.stage < 2) return grads_.data<float>() + unit.padded_offset + off;
  UnitState& s = units_[u];
  if (!s.bucket.defined()) {
    DT_ASSIGN_OR_RETURN(s.bucket,
                        Tensor::Zeros(allocator_, DType::kF32, {partition_.padded_numel(u)},
                                      MemoryCategory::kCommBuffers));
  }
  return s.bucket.data<float>() + off;
}

absl::Status ZeroState::ReleaseGrads(int module) {
  if (config_.stage < 2) return absl::OkStatus();
  const int u = partition_.unit_of_module(module);
  const Unit& unit = partition_.units()[u];
  UnitState& s = units_[u];
  if (++s.grads_released < unit.end_module - unit.first_module) return absl::OkStatus();
  s.grads_released = 0;
  DT_RETURN_IF_ERROR(LaunchReduce(u));
  reducing_.push_back(u);
  // Without overlap_comm the reduction finishes before backward goes on. With it, backward runs
  // on while buckets reduce, but only two stay in flight (DeepSpeed double-buffers its IPG
  // bucket likewise): each bucket holds a unit's full gradients, and letting them pile up would
  // hold the whole model's gradients that stage 2 exists to avoid. Finished ones are collected
  // as soon as they are seen.
  const size_t max_in_flight = config_.overlap_comm ? 2 : 0;
  while (!reducing_.empty() &&
         (reducing_.size() > max_in_flight || units_[reducing_.front()].reduce == nullptr ||
          units_[reducing_.front()].reduce->IsCompleted())) {
    DT_RETURN_IF_ERROR(CollectReduce(reducing_.front()));
    reducing_.pop_front();
  }
  return absl::OkStatus();
}

// ---- gradients ----

absl::Status ZeroState::LaunchReduce(int u) {
  UnitState& s = units_[u];
  s.reduced = true;
  if (!distributed()) return absl::OkStatus();  // the bucket already is the whole (own) chunk
  const Unit& unit = partition_.units()[u];
  float* bucket = s.bucket.data<float>();
  DT_ASSIGN_OR_RETURN(s.reduce,
                      dp_->ReduceScatter(F32(bucket, partition_.padded_numel(u)),
                                         F32(bucket + partition_.rank() * unit.chunk, unit.chunk),
                                         ReduceOp::kAvg, comm_));
  traffic_.reduce_scatter += int64_t{4} * unit.chunk * (world() - 1);
  return absl::OkStatus();
}

absl::Status ZeroState::CollectReduce(int u) {
  UnitState& s = units_[u];
  DT_RETURN_IF_ERROR(Wait(s.reduce));
  const Unit& unit = partition_.units()[u];
  // grads_ is zero at the start of a step, so the first micro-batch's add is an exact copy.
  kernels::AddInPlace(grads_.data<float>() + unit.owned_offset,
                      s.bucket.data<float>() + partition_.rank() * unit.chunk, unit.chunk);
  s.bucket = Tensor();
  s.reduced = false;
  return absl::OkStatus();
}

void ZeroState::BeginMicroBatch() {
  trace_pos_ = 0;
  trace_broken_ = false;
  recording_.clear();
}

absl::Status ZeroState::FinishBackward() {
  if (config_.stage >= 2) {
    reducing_.clear();
    for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
      if (units_[u].reduced) DT_RETURN_IF_ERROR(CollectReduce(u));
      if (units_[u].bucket.defined()) {
        return absl::InternalError(
            absl::StrCat("gradients of unit ", u, " (from module ",
                         layout_.modules()[partition_.units()[u].first_module].name,
                         ") were acquired but not all its modules released them"));
      }
    }
  }
  if (config_.stage == 3 && training_) {
    // The order just seen becomes the trace; a different one than recorded invalidates it
    // (DeepSpeed logs "Invalidate trace cache" and records again).
    if (trace_state_ == TraceState::kComplete &&
        (trace_broken_ || recording_.size() != trace_.size())) {
      ++trace_invalidations_;
    }
    trace_ = recording_;
    trace_state_ = TraceState::kComplete;
  }
  return absl::OkStatus();
}

absl::Status ZeroState::ReduceGradients() {
  if (!distributed() || config_.stage >= 2) return absl::OkStatus();  // 2, 3: done in backward
  float* grads = grads_.data<float>();
  const int n = dp_->size();
  if (config_.stage == 0) {
    const int64_t count = partition_.padded_total();
    DT_ASSIGN_OR_RETURN(auto work, dp_->AllReduce(F32(grads, count), ReduceOp::kAvg, comm_));
    traffic_.all_reduce += int64_t{4} * count * 2 * (n - 1) / n;
    return work->Wait();
  }
  // Stage 1: each unit's full gradients reduce-scatter in place; this rank keeps its chunk.
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
    const Unit& unit = partition_.units()[u];
    float* base = grads + unit.padded_offset;
    DT_ASSIGN_OR_RETURN(units_[u].reduce,
                        dp_->ReduceScatter(F32(base, partition_.padded_numel(u)),
                                           F32(base + partition_.rank() * unit.chunk, unit.chunk),
                                           ReduceOp::kAvg, comm_));
    traffic_.reduce_scatter += int64_t{4} * unit.chunk * (n - 1);
  }
  for (UnitState& s : units_) DT_RETURN_IF_ERROR(Wait(s.reduce));
  return absl::OkStatus();
}

absl::StatusOr<double> ZeroState::GradSquaredNorm() {
  const float* grads = grads_.data<float>();
  double local = 0.0;
  if (config_.stage == 0) {
    local = kernels::SumSquares(grads, partition_.padded_total());
  } else if (config_.stage == 1) {
    for (const Unit& unit : partition_.units()) {
      local += kernels::SumSquares(grads + unit.padded_offset + partition_.rank() * unit.chunk,
                                   unit.chunk);
    }
  } else {
    local = kernels::SumSquares(grads, partition_.owned_total());
  }
  if (config_.stage == 0 || !distributed()) return local;
  float sum = static_cast<float>(local);
  DT_ASSIGN_OR_RETURN(auto work, dp_->AllReduce(F32(&sum, 1), ReduceOp::kSum, comm_));
  DT_RETURN_IF_ERROR(work->Wait());
  traffic_.all_reduce += int64_t{4} * 2 * (dp_->size() - 1) / dp_->size();
  return static_cast<double>(sum);
}

void ZeroState::AdamW(const kernels::AdamWArgs& args) {
  float* params = params_.data<float>();
  float* grads = grads_.data<float>();
  float* m = exp_avg_.data<float>();
  float* v = exp_avg_sq_.data<float>();
  if (config_.stage == 3) {
    kernels::AdamWUpdate(params, grads, m, v, partition_.owned_total(), args);
    return;
  }
  for (const Unit& unit : partition_.units()) {
    const int64_t mine = unit.padded_offset + partition_.rank() * unit.chunk;
    const float* g = config_.stage == 2 ? grads + unit.owned_offset : grads + mine;
    kernels::AdamWUpdate(params + mine, g, m + unit.owned_offset, v + unit.owned_offset, unit.chunk,
                         args);
  }
}

absl::Status ZeroState::FinishStep() {
  grads_.SetZero();
  if (config_.stage == 3) {
    // Every gathered copy, persistent ones included, is now stale.
    for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
      if (units_[u].users != 0) {
        return absl::FailedPreconditionError("FinishStep with a module still acquired");
      }
      if (units_[u].gathered.defined()) DropGathered(u);
    }
    return absl::OkStatus();
  }
  if (config_.stage == 0 || !distributed()) return absl::OkStatus();
  // Stages 1, 2: every rank updated its chunks; all-gather them in place.
  float* params = params_.data<float>();
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
    const Unit& unit = partition_.units()[u];
    float* base = params + unit.padded_offset;
    DT_ASSIGN_OR_RETURN(units_[u].gather,
                        dp_->AllGather(F32(base + partition_.rank() * unit.chunk, unit.chunk),
                                       F32(base, partition_.padded_numel(u)), comm_));
    traffic_.all_gather += int64_t{4} * unit.chunk * (world() - 1);
  }
  for (UnitState& s : units_) DT_RETURN_IF_ERROR(Wait(s.gather));
  return absl::OkStatus();
}

// ---- stage 3 parameters ----

void ZeroState::Trace(int u) {
  if (!training_) return;
  recording_.push_back(u);
  if (trace_state_ == TraceState::kComplete && !trace_broken_ &&
      (trace_pos_ >= trace_.size() || trace_[trace_pos_] != u)) {
    trace_broken_ = true;  // prefetching stops until the order is recorded again
  }
  ++trace_pos_;
}

absl::Status ZeroState::StartGather(int u) {
  UnitState& s = units_[u];
  const Unit& unit = partition_.units()[u];
  const int64_t n = partition_.padded_numel(u);
  DT_ASSIGN_OR_RETURN(s.gathered,
                      Tensor::Empty(allocator_, DType::kF32, {n}, MemoryCategory::kGatheredParams));
  live_floats_ += n;
  float* mine = params_.data<float>() + unit.owned_offset;
  if (!distributed()) {
    std::memcpy(s.gathered.data<float>(), mine, n * sizeof(float));
    return absl::OkStatus();
  }
  DT_ASSIGN_OR_RETURN(
      s.gather, dp_->AllGather(F32(mine, unit.chunk), F32(s.gathered.data<float>(), n), comm_));
  traffic_.all_gather += int64_t{4} * unit.chunk * (world() - 1);
  return absl::OkStatus();
}

absl::Status ZeroState::EnsureGathered(int u) {
  UnitState& s = units_[u];
  if (!s.gathered.defined()) DT_RETURN_IF_ERROR(StartGather(u));
  return Wait(s.gather);
}

void ZeroState::DropGathered(int u) {
  UnitState& s = units_[u];
  if (s.gather) (void)Wait(s.gather);  // its buffer is being written: finish first
  live_floats_ -= s.gathered.numel();
  s.gathered = Tensor();
}

// Prefetch along the trace: the next units not yet gathered, while the all-gathers in flight
// stay within stage3_prefetch_bucket_size and everything gathered within
// stage3_max_live_parameters.
absl::Status ZeroState::Prefetch() {
  if (!training_ || trace_state_ != TraceState::kComplete || trace_broken_) return absl::OkStatus();
  int64_t in_flight = 0;
  for (const UnitState& s : units_) {
    if (s.gather) in_flight += s.gathered.numel();
  }
  for (size_t j = trace_pos_; j < trace_.size(); ++j) {
    const int v = trace_[j];
    if (units_[v].gathered.defined()) continue;
    const int64_t n = partition_.padded_numel(v);
    if (in_flight + n > config_.prefetch_bucket_size) break;
    if (live_floats_ + n > config_.max_live_parameters) break;
    DT_RETURN_IF_ERROR(StartGather(v));
    in_flight += n;
  }
  return absl::OkStatus();
}

// DeepSpeed keeps a released parameter when it is used again within stage3_max_reuse_distance
// (counted in parameters fetched in between) and the live total allows it.
bool ZeroState::KeepForReuse(int u) const {
  if (!training_ || trace_state_ != TraceState::kComplete || trace_broken_) return false;
  if (live_floats_ > config_.max_live_parameters) return false;
  int64_t distance = 0;
  for (size_t j = trace_pos_; j < trace_.size(); ++j) {
    if (trace_[j] == u) return distance <= config_.max_reuse_distance;
    distance += partition_.padded_numel(trace_[j]);
  }
  return false;  // not used again in this micro-batch
}

}  // namespace dstrain::zero
