#include "worker/zero/zero_state.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_macros.h"
#include "kernels/cast/cast.h"
#include "kernels/residual/residual.h"

namespace dstrain::zero {
namespace {

comm::CommBuffer F32(float* data, int64_t count) {
  return comm::CommBuffer{data, count, DType::kF32};
}

DType HalfOf(DType t) { return t == DType::kF16 ? DType::kF16 : DType::kBF16; }

// dst = src converted; f32 and one 16-bit type (the config layer rules out bf16 <-> fp16).
void Convert(void* dst, DType dst_t, const void* src, DType src_t, int64_t n) {
  if (dst_t == src_t) {
    std::memcpy(dst, src, n * DTypeSize(dst_t));
  } else if (src_t == DType::kF32) {
    kernels::FloatToHalf(HalfOf(dst_t), static_cast<uint16_t*>(dst), static_cast<const float*>(src),
                         n);
  } else {
    kernels::HalfToFloat(HalfOf(src_t), static_cast<float*>(dst), static_cast<const uint16_t*>(src),
                         n);
  }
}

// dst += src, rounding once into dst's type.
void AddInto(void* dst, DType dst_t, const void* src, DType src_t, int64_t n) {
  std::vector<float> widened;
  const float* add = static_cast<const float*>(src);
  if (src_t != DType::kF32) {
    widened.resize(n);
    kernels::HalfToFloat(HalfOf(src_t), widened.data(), static_cast<const uint16_t*>(src), n);
    add = widened.data();
  }
  if (dst_t == DType::kF32) {
    kernels::AddInPlace(static_cast<float*>(dst), add, n);
  } else {
    kernels::AccumulateIntoHalf(HalfOf(dst_t), static_cast<uint16_t*>(dst), add, n);
  }
}

void ScaleBuffer(void* data, DType t, int64_t n, double factor) {
  if (t == DType::kF32) {
    kernels::Scale(static_cast<float*>(data), n, static_cast<float>(factor));
    return;
  }
  std::vector<float> x(n);
  kernels::HalfToFloat(HalfOf(t), x.data(), static_cast<const uint16_t*>(data), n);
  kernels::Scale(x.data(), n, static_cast<float>(factor));
  kernels::FloatToHalf(HalfOf(t), static_cast<uint16_t*>(data), x.data(), n);
}

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

absl::StatusOr<std::unique_ptr<ZeroState>> ZeroState::Create(
    const model::ParamLayout& layout, const config::ZeroConfig& config, comm::Communicator* dp,
    comm::CommOptions comm, tensor::Allocator* allocator, DType storage,
    GradientReduction reduction) {
  if (config.stage < 0 || config.stage > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("zero_optimization.stage: ", config.stage, " is not 0, 1, 2 or 3"));
  }
  if (storage != DType::kF32 && storage != DType::kBF16 && storage != DType::kF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter storage must be f32, bf16 or f16, not ", DTypeName(storage)));
  }
  if (reduction.dtype != DType::kF32 && storage != DType::kF32 && reduction.dtype != storage) {
    return absl::InvalidArgumentError(
        absl::StrCat("communication_data_type: ", DTypeName(reduction.dtype), " with ",
                     DTypeName(storage), " storage"));
  }
  if (!(reduction.predivide > 0)) {
    return absl::InvalidArgumentError("gradient_predivide_factor: must be > 0");
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
      new ZeroState(layout, config, dp, comm, allocator, std::move(partition), storage, reduction));
  // DeepSpeed's three ways to average: a plain mean, prescaling (1/N before the sum) and
  // predivision (1/f before, f/N after). The mean is one kAvg collective (the sum in f32 inside
  // the backend, divided once); the other two scale around a kSum.
  if (reduction.prescale) {
    z->reduce_op_ = comm::ReduceOp::kSum;
    z->pre_scale_ = 1.0 / world;
  } else if (reduction.predivide != 1.0) {
    z->reduce_op_ = comm::ReduceOp::kSum;
    z->pre_scale_ = 1.0 / reduction.predivide;
    z->post_scale_ = reduction.predivide / world;
  }
  const Partition& p = z->partition_;
  if (config.stage == 3) {
    const std::vector<bool> persistent = PersistentUnits(layout, p, config);
    for (size_t u = 0; u < persistent.size(); ++u) z->units_[u].persistent = persistent[u];
  }
  const int64_t param_elems = config.stage == 3 ? p.owned_total() : p.padded_total();
  const int64_t grad_elems = config.stage >= 2 ? p.owned_total() : p.padded_total();
  DT_ASSIGN_OR_RETURN(z->params_, tensor::Tensor::Zeros(allocator, storage, {param_elems},
                                                        tensor::MemoryCategory::kParams));
  DT_ASSIGN_OR_RETURN(z->grads_, tensor::Tensor::Zeros(allocator, storage, {grad_elems},
                                                       tensor::MemoryCategory::kGrads));
  if (z->mixed()) {
    DT_ASSIGN_OR_RETURN(z->master_, tensor::Tensor::Zeros(allocator, DType::kF32, {p.owned_total()},
                                                          tensor::MemoryCategory::kOptimizerState));
  }
  DT_ASSIGN_OR_RETURN(z->exp_avg_, tensor::Tensor::Zeros(allocator, DType::kF32, {p.owned_total()},
                                                         tensor::MemoryCategory::kOptimizerState));
  DT_ASSIGN_OR_RETURN(z->exp_avg_sq_,
                      tensor::Tensor::Zeros(allocator, DType::kF32, {p.owned_total()},
                                            tensor::MemoryCategory::kOptimizerState));
  return z;
}

ZeroState::ZeroState(const model::ParamLayout& layout, const config::ZeroConfig& config,
                     comm::Communicator* dp, comm::CommOptions comm, tensor::Allocator* allocator,
                     Partition partition, DType storage, GradientReduction reduction)
    : layout_(layout),
      config_(config),
      dp_(dp),
      comm_(comm),
      allocator_(allocator),
      partition_(std::move(partition)),
      units_(partition_.units().size()),
      storage_(storage),
      reduction_(reduction),
      modules_(layout.modules().size()) {}

void ZeroState::PreScale(void* data, int64_t count) const {
  if (pre_scale_ != 1.0) ScaleBuffer(data, reduction_.dtype, count, pre_scale_);
}

void ZeroState::PostScale(void* data, int64_t count) const {
  if (post_scale_ != 1.0) ScaleBuffer(data, reduction_.dtype, count, post_scale_);
}

ZeroState::~ZeroState() {
  // A collective still in flight writes into buffers about to be freed: wait for it first.
  for (UnitState& u : units_) {
    if (u.reduce) (void)u.reduce->Wait();
    if (u.gather) (void)u.gather->Wait();
  }
}

absl::Status ZeroState::Wait(std::unique_ptr<comm::Work>& work) {
  if (!work) return absl::OkStatus();
  // Time blocked here is communication the computation did not hide.
  const absl::Time start = absl::Now();
  absl::Status status = work->Wait();
  traffic_.wait_seconds += absl::ToDoubleSeconds(absl::Now() - start);
  work.reset();
  return status;
}

int64_t ZeroState::ModuleFloats(int module) const {
  const auto& modules = layout_.modules();
  const int64_t end =
      module + 1 < static_cast<int>(modules.size()) ? modules[module + 1].offset : layout_.total();
  return end - modules[module].offset;
}

int64_t ZeroState::ParamChunk(const Unit& unit) const {
  return config_.stage == 3 ? unit.owned_offset
                            : unit.padded_offset + partition_.rank() * unit.chunk;
}

int64_t ZeroState::GradChunk(const Unit& unit) const {
  return config_.stage >= 2 ? unit.owned_offset
                            : unit.padded_offset + partition_.rank() * unit.chunk;
}

absl::Status ZeroState::SetParams(float* flat) {
  if (distributed()) {
    const int64_t n = layout_.total();
    DT_ASSIGN_OR_RETURN(auto work, dp_->Broadcast(F32(flat, n), /*root=*/0, comm_));
    DT_RETURN_IF_ERROR(Wait(work));
    traffic_.broadcast += n * 4 * (dp_->size() - 1) / dp_->size();
  }
  if (!mixed()) {
    if (config_.stage == 3) {
      partition_.FlatToOwned(flat, params_.data<float>());
    } else {
      partition_.FlatToPadded(flat, params_.data<float>());
    }
    return absl::OkStatus();
  }
  // Mixed: the master weights take this rank's chunks; the 16-bit working copy is their
  // rounding, in the layout its stage keeps.
  partition_.FlatToOwned(flat, master_.data<float>());
  const int64_t n = config_.stage == 3 ? partition_.owned_total() : partition_.padded_total();
  std::vector<float> staged(n);
  if (config_.stage == 3) {
    std::copy(master_.data<float>(), master_.data<float>() + n, staged.data());
  } else {
    partition_.FlatToPadded(flat, staged.data());
  }
  kernels::FloatToHalf(half(), params_.data<uint16_t>(), staged.data(), n);
  return absl::OkStatus();
}

absl::Status ZeroState::GetParams(float* flat) {
  if (!mixed() && config_.stage < 3) {
    if (flat != nullptr) partition_.PaddedToFlat(params_.data<float>(), flat);
    return absl::OkStatus();
  }
  if (!mixed()) {
    for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
      DT_RETURN_IF_ERROR(EnsureGathered(u));
      if (flat != nullptr) partition_.UnitToFlat(u, units_[u].gathered.data<float>(), flat);
      if (units_[u].users == 0 && !units_[u].persistent) DropGathered(u);
    }
    return absl::OkStatus();
  }
  // Mixed: the fp32 master weights, one unit's chunks gathered at a time.
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
    const Unit& unit = partition_.units()[u];
    const int64_t n = partition_.padded_numel(u);
    float* mine = master_.data<float>() + unit.owned_offset;
    DT_ASSIGN_OR_RETURN(
        tensor::Tensor whole,
        tensor::Tensor::Empty(allocator_, DType::kF32, {n}, tensor::MemoryCategory::kCommBuffers));
    if (distributed() && config_.stage > 0) {
      DT_ASSIGN_OR_RETURN(
          auto work, dp_->AllGather(F32(mine, unit.chunk), F32(whole.data<float>(), n), comm_));
      DT_RETURN_IF_ERROR(Wait(work));
      traffic_.all_gather += int64_t{4} * unit.chunk * (world() - 1);
    } else {
      std::memcpy(whole.data<float>(), mine, n * sizeof(float));
    }
    if (flat != nullptr) partition_.UnitToFlat(u, whole.data<float>(), flat);
  }
  return absl::OkStatus();
}

// ---- ParamAccess ----

absl::StatusOr<const float*> ZeroState::AcquireParams(int module, model::Pass) {
  const int u = partition_.unit_of_module(module);
  const Unit& unit = partition_.units()[u];
  const int64_t off = layout_.modules()[module].offset - unit.begin;
  UnitState& s = units_[u];
  if (config_.stage == 3) {
    Trace(u);
    DT_RETURN_IF_ERROR(EnsureGathered(u));
    ++s.users;
    DT_RETURN_IF_ERROR(Prefetch());
  }
  if (!mixed()) {
    return config_.stage == 3 ? s.gathered.data<float>() + off
                              : params_.data<float>() + unit.padded_offset + off;
  }
  // Mixed: the model computes on an fp32 widening of the module, made on first use.
  ModuleState& ms = modules_[module];
  if (ms.users++ == 0) {
    const void* source = config_.stage == 3
                             ? static_cast<const char*>(s.gathered.raw()) + off * elem()
                             : At(params_, unit.padded_offset + off);
    DT_ASSIGN_OR_RETURN(ms.widened,
                        tensor::Tensor::Empty(allocator_, DType::kF32, {ModuleFloats(module)},
                                              tensor::MemoryCategory::kGatheredParams));
    const uint16_t* from = static_cast<const uint16_t*>(source);
    if (widen_ranges_.empty()) {
      kernels::HalfToFloat(half(), ms.widened.data<float>(), from, ms.widened.numel());
    } else {
      for (const auto& [first, last] : widen_ranges_[module]) {
        kernels::HalfToFloat(half(), ms.widened.data<float>() + first, from + first, last - first);
      }
    }
  }
  return ms.widened.data<float>();
}

const uint16_t* ZeroState::Bf16Params(int module) {
  if (storage_ != DType::kBF16) return nullptr;
  const int u = partition_.unit_of_module(module);
  const Unit& unit = partition_.units()[u];
  const int64_t off = layout_.modules()[module].offset - unit.begin;
  if (config_.stage == 3) {
    const tensor::Tensor& g = units_[u].gathered;
    return g.defined() ? g.data<uint16_t>() + off : nullptr;
  }
  return static_cast<const uint16_t*>(At(params_, unit.padded_offset + off));
}

void ZeroState::SetBf16OnlyParams(std::vector<int> params) {
  if (storage_ != DType::kBF16) return;
  std::vector<bool> skip(layout_.params().size(), false);
  for (int i : params) skip[i] = true;
  widen_ranges_.assign(layout_.modules().size(), {});
  for (int m = 0; m < static_cast<int>(layout_.modules().size()); ++m) {
    // Walk the module's floats, cutting out the skipped parameters.
    const int64_t begin = layout_.modules()[m].offset;
    int64_t cursor = 0;
    for (int i : layout_.modules()[m].params) {
      if (!skip[i]) continue;
      const int64_t first = layout_.params()[i].offset - begin;
      if (first > cursor) widen_ranges_[m].push_back({cursor, first});
      cursor = first + layout_.params()[i].numel;
    }
    if (cursor < ModuleFloats(m)) widen_ranges_[m].push_back({cursor, ModuleFloats(m)});
  }
}

absl::Status ZeroState::ReleaseParams(int module, model::Pass) {
  if (mixed()) {
    ModuleState& ms = modules_[module];
    if (ms.users <= 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "ReleaseParams: module ", layout_.modules()[module].name, " is not acquired"));
    }
    if (--ms.users == 0) ms.widened = tensor::Tensor();
  }
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
  if (GradScratch()) {
    // The model accumulates in fp32; ReleaseGrads rounds into the 16-bit destination.
    tensor::Tensor& scratch = modules_[module].grad_scratch;
    if (!FreshGrads(module)) {
      DT_ASSIGN_OR_RETURN(scratch,
                          tensor::Tensor::Zeros(allocator_, DType::kF32, {ModuleFloats(module)},
                                                tensor::MemoryCategory::kCommBuffers));
      return scratch.data<float>();
    }
    // The model overwrites the matrix weights' gradients first (FreshGrads): zero the rest.
    DT_ASSIGN_OR_RETURN(scratch,
                        tensor::Tensor::Empty(allocator_, DType::kF32, {ModuleFloats(module)},
                                              tensor::MemoryCategory::kCommBuffers));
    for (const auto& [first, last] : widen_ranges_[module]) {
      std::fill(scratch.data<float>() + first, scratch.data<float>() + last, 0.f);
    }
    return scratch.data<float>();
  }
  if (config_.stage < 2) return grads_.data<float>() + unit.padded_offset + off;
  UnitState& s = units_[u];
  if (!s.bucket.defined()) {
    DT_ASSIGN_OR_RETURN(s.bucket,
                        tensor::Tensor::Zeros(allocator_, DType::kF32, {partition_.padded_numel(u)},
                                              tensor::MemoryCategory::kCommBuffers));
  }
  return s.bucket.data<float>() + off;
}

absl::Status ZeroState::ReleaseGrads(int module) {
  const int u = partition_.unit_of_module(module);
  const Unit& unit = partition_.units()[u];
  UnitState& s = units_[u];
  if (GradScratch()) {
    tensor::Tensor& scratch = modules_[module].grad_scratch;
    if (!scratch.defined()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "ReleaseGrads: gradients of module ", layout_.modules()[module].name, " not acquired"));
    }
    const int64_t off = layout_.modules()[module].offset - unit.begin;
    if (config_.stage < 2) {
      AddInto(At(grads_, unit.padded_offset + off), storage_, scratch.data<float>(), DType::kF32,
              scratch.numel());
    } else {
      if (!s.bucket.defined()) {
        DT_ASSIGN_OR_RETURN(
            s.bucket, tensor::Tensor::Zeros(allocator_, BucketType(), {partition_.padded_numel(u)},
                                            tensor::MemoryCategory::kCommBuffers));
      }
      AddInto(static_cast<char*>(s.bucket.raw()) + off * DTypeSize(BucketType()), BucketType(),
              scratch.data<float>(), DType::kF32, scratch.numel());
    }
    scratch = tensor::Tensor();
  }
  if (config_.stage < 2) return absl::OkStatus();
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
  const int64_t n = partition_.padded_numel(u);
  const DType t = BucketType();
  PreScale(s.bucket.raw(), n);
  char* bucket = static_cast<char*>(s.bucket.raw());
  DT_ASSIGN_OR_RETURN(
      s.reduce,
      dp_->ReduceScatter(
          comm::CommBuffer{bucket, n, t},
          comm::CommBuffer{bucket + partition_.rank() * unit.chunk * DTypeSize(t), unit.chunk, t},
          reduce_op_, comm_));
  traffic_.reduce_scatter += static_cast<int64_t>(DTypeSize(t)) * unit.chunk * (world() - 1);
  return absl::OkStatus();
}

absl::Status ZeroState::CollectReduce(int u) {
  UnitState& s = units_[u];
  DT_RETURN_IF_ERROR(Wait(s.reduce));
  const Unit& unit = partition_.units()[u];
  char* mine =
      static_cast<char*>(s.bucket.raw()) + partition_.rank() * unit.chunk * DTypeSize(BucketType());
  if (distributed()) PostScale(mine, unit.chunk);
  // grads_ is zero at the start of a step, so the first micro-batch's add is an exact copy.
  AddInto(At(grads_, unit.owned_offset), storage_, mine, BucketType(), unit.chunk);
  s.bucket = tensor::Tensor();
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
  const int n = dp_->size();
  const DType t = reduction_.dtype;
  const int64_t total = partition_.padded_total();
  // The gradients travel as they are stored, or through a copy in communication_data_type.
  tensor::Tensor copy;
  void* buffer = grads_.raw();
  if (t != storage_) {
    DT_ASSIGN_OR_RETURN(
        copy, tensor::Tensor::Empty(allocator_, t, {total}, tensor::MemoryCategory::kCommBuffers));
    Convert(copy.raw(), t, grads_.raw(), storage_, total);
    buffer = copy.raw();
  }
  char* base = static_cast<char*>(buffer);
  const size_t es = DTypeSize(t);
  PreScale(buffer, total);
  if (config_.stage == 0) {
    DT_ASSIGN_OR_RETURN(auto work,
                        dp_->AllReduce(comm::CommBuffer{buffer, total, t}, reduce_op_, comm_));
    traffic_.all_reduce += static_cast<int64_t>(es) * total * 2 * (n - 1) / n;
    DT_RETURN_IF_ERROR(Wait(work));
    PostScale(buffer, total);
    if (t != storage_) Convert(grads_.raw(), storage_, buffer, t, total);
    return absl::OkStatus();
  }
  // Stage 1: each unit's full gradients reduce-scatter in place; this rank keeps its chunk.
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
    const Unit& unit = partition_.units()[u];
    DT_ASSIGN_OR_RETURN(
        units_[u].reduce,
        dp_->ReduceScatter(
            comm::CommBuffer{base + unit.padded_offset * es, partition_.padded_numel(u), t},
            comm::CommBuffer{base + GradChunk(unit) * es, unit.chunk, t}, reduce_op_, comm_));
    traffic_.reduce_scatter += static_cast<int64_t>(es) * unit.chunk * (n - 1);
  }
  for (UnitState& s : units_) DT_RETURN_IF_ERROR(Wait(s.reduce));
  for (const Unit& unit : partition_.units()) {
    PostScale(base + GradChunk(unit) * es, unit.chunk);
    if (t != storage_) {
      Convert(At(grads_, GradChunk(unit)), storage_, base + GradChunk(unit) * es, t, unit.chunk);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<double> ZeroState::GradSquaredNorm() {
  auto sum_squares = [&](int64_t first, int64_t count) {
    if (!mixed()) return kernels::SumSquares(grads_.data<float>() + first, count);
    return kernels::SumSquaresHalf(half(), static_cast<const uint16_t*>(At(grads_, first)), count);
  };
  double local = 0.0;
  if (config_.stage == 0) {
    local = sum_squares(0, partition_.padded_total());
  } else if (config_.stage == 1) {
    for (const Unit& unit : partition_.units()) local += sum_squares(GradChunk(unit), unit.chunk);
  } else {
    local = sum_squares(0, partition_.owned_total());
  }
  if (config_.stage == 0 || !distributed()) return local;
  // inf and NaN survive the sum, so every rank sees any rank's overflow.
  float sum = static_cast<float>(local);
  DT_ASSIGN_OR_RETURN(auto work, dp_->AllReduce(F32(&sum, 1), comm::ReduceOp::kSum, comm_));
  DT_RETURN_IF_ERROR(Wait(work));
  traffic_.all_reduce += int64_t{4} * 2 * (dp_->size() - 1) / dp_->size();
  return static_cast<double>(sum);
}

void ZeroState::AdamW(const kernels::AdamWArgs& args) {
  float* m = exp_avg_.data<float>();
  float* v = exp_avg_sq_.data<float>();
  if (!mixed() && config_.stage == 3) {
    kernels::AdamWUpdate(params_.data<float>(), grads_.data<float>(), m, v,
                         partition_.owned_total(), args);
    return;
  }
  for (const Unit& unit : partition_.units()) {
    const int64_t o = unit.owned_offset;
    if (mixed()) {
      kernels::AdamWUpdateMixed(master_.data<float>() + o,
                                static_cast<const uint16_t*>(At(grads_, GradChunk(unit))), m + o,
                                v + o, static_cast<uint16_t*>(At(params_, ParamChunk(unit))),
                                unit.chunk, args, half());
    } else {
      kernels::AdamWUpdate(params_.data<float>() + ParamChunk(unit),
                           grads_.data<float>() + GradChunk(unit), m + o, v + o, unit.chunk, args);
    }
  }
}

void ZeroState::SkipStep() { grads_.SetZero(); }

void ZeroState::PoisonGradientsForTesting() {
  if (!mixed()) {
    grads_.data<float>()[0] = std::numeric_limits<float>::infinity();
  } else {
    grads_.data<uint16_t>()[0] = storage_ == DType::kF16 ? 0x7C00 : 0x7F80;  // +inf
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
  DT_RETURN_IF_ERROR(GatherOwnedChunks());
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
  DT_ASSIGN_OR_RETURN(s.gathered, tensor::Tensor::Empty(allocator_, storage_, {n},
                                                        tensor::MemoryCategory::kGatheredParams));
  live_floats_ += n;
  if (!distributed()) {
    std::memcpy(s.gathered.raw(), At(params_, unit.owned_offset), n * elem());
    return absl::OkStatus();
  }
  DT_ASSIGN_OR_RETURN(s.gather, dp_->AllGather(Buf(params_, unit.owned_offset, unit.chunk),
                                               Buf(s.gathered, 0, n), comm_));
  traffic_.all_gather += static_cast<int64_t>(elem()) * unit.chunk * (world() - 1);
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
  s.gathered = tensor::Tensor();
}

// Prefetch along the trace: the next units not yet gathered, while the all-gathers in flight
// stay within stage3_prefetch_bucket_size and everything gathered within
// stage3_max_live_parameters (both counted in parameters, as DeepSpeed does).
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

// ---- checkpoint shards ----

// The shard header: what must match for the bytes after it to mean the same thing.
struct ShardHeader {
  char magic[8] = {'d', 's', 'z', 'e', 'r', 'o', '0', '1'};
  int32_t stage = 0, world = 0, rank = 0, storage = 0;
  int64_t layout_total = 0, owned_total = 0, units = 0;
};

ShardHeader ZeroState::MakeHeader(const ZeroState& z) {
  ShardHeader h;
  h.stage = z.config_.stage;
  h.world = z.partition_.world();
  h.rank = z.partition_.rank();
  h.storage = static_cast<int32_t>(z.storage_);
  h.layout_total = z.layout_.total();
  h.owned_total = z.partition_.owned_total();
  h.units = static_cast<int64_t>(z.partition_.units().size());
  return h;
}

absl::StatusOr<std::vector<absl::string_view>> ZeroState::ShardPieces(std::string* head) {
  for (const UnitState& u : units_) {
    if (u.users != 0 || u.reduced) {
      return absl::FailedPreconditionError("checkpoint shard: only between steps");
    }
  }
  const ShardHeader h = MakeHeader(*this);
  head->append(reinterpret_cast<const char*>(&h), sizeof(h));
  const int64_t n = partition_.owned_total();
  auto bytes = [](void* p, int64_t floats) {
    return absl::string_view(static_cast<const char*>(p), 4 * static_cast<size_t>(floats));
  };
  std::vector<absl::string_view> pieces;
  // Parameters: this rank's chunks in unit order (mixed: the fp32 master weights).
  if (mixed()) {
    pieces.push_back(bytes(master_.raw(), n));
  } else {
    for (const Unit& unit : partition_.units()) {
      pieces.push_back(bytes(At(params_, ParamChunk(unit)), unit.chunk));
    }
  }
  pieces.push_back(bytes(exp_avg_.raw(), n));
  pieces.push_back(bytes(exp_avg_sq_.raw(), n));
  return pieces;
}

absl::Status ZeroState::LoadShard(env::ByteSource& shard) {
  const ShardHeader want = MakeHeader(*this);
  const int64_t n = partition_.owned_total();
  if (shard.remaining() != sizeof(ShardHeader) + 12 * static_cast<uint64_t>(n)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shard has ", shard.remaining(), " bytes, expected ", sizeof(ShardHeader) + 12 * n));
  }
  ShardHeader got;
  DT_RETURN_IF_ERROR(shard.Read(&got, sizeof(got)));
  if (std::memcmp(got.magic, want.magic, sizeof(got.magic)) != 0) {
    return absl::FailedPreconditionError("not a ZeRO state shard (bad magic)");
  }
  if (got.stage != want.stage || got.world != want.world || got.rank != want.rank ||
      got.storage != want.storage || got.layout_total != want.layout_total ||
      got.units != want.units) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shard written at stage ", got.stage, ", rank ", got.rank, " of ", got.world, ", storage ",
        DTypeName(static_cast<DType>(got.storage)), " cannot load into stage ", want.stage,
        ", rank ", want.rank, " of ", want.world, ", storage ", DTypeName(storage_),
        " (resharding goes through a consolidated export)"));
  }
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
    if (units_[u].gathered.defined()) DropGathered(u);  // stale: the parameters change
  }
  if (mixed()) {
    DT_RETURN_IF_ERROR(shard.Read(master_.raw(), 4 * n));
    for (const Unit& unit : partition_.units()) {
      kernels::FloatToHalf(half(), static_cast<uint16_t*>(At(params_, ParamChunk(unit))),
                           master_.data<float>() + unit.owned_offset, unit.chunk);
    }
  } else {
    for (const Unit& unit : partition_.units()) {
      DT_RETURN_IF_ERROR(shard.Read(At(params_, ParamChunk(unit)), 4 * unit.chunk));
    }
  }
  DT_RETURN_IF_ERROR(shard.Read(exp_avg_.raw(), 4 * n));
  DT_RETURN_IF_ERROR(shard.Read(exp_avg_sq_.raw(), 4 * n));
  grads_.SetZero();
  return absl::OkStatus();
}

absl::Status ZeroState::GatherAfterLoad() {
  // Stages 1-2 keep full parameters: every rank's chunks come back by all-gather, as after a step.
  if ((config_.stage == 1 || config_.stage == 2) && distributed()) {
    DT_RETURN_IF_ERROR(GatherOwnedChunks());
  }
  return absl::OkStatus();
}

absl::Status ZeroState::GatherOwnedChunks() {
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
    const Unit& unit = partition_.units()[u];
    DT_ASSIGN_OR_RETURN(
        units_[u].gather,
        dp_->AllGather(Buf(params_, ParamChunk(unit), unit.chunk),
                       Buf(params_, unit.padded_offset, partition_.padded_numel(u)), comm_));
    traffic_.all_gather += static_cast<int64_t>(elem()) * unit.chunk * (world() - 1);
  }
  for (UnitState& s : units_) DT_RETURN_IF_ERROR(Wait(s.gather));
  return absl::OkStatus();
}

absl::Status ZeroState::ShardToFlat(const model::ParamLayout& layout, absl::string_view shard,
                                    int64_t reduce_bucket_size, float* weights, float* m,
                                    float* v) {
  ShardHeader h;
  if (shard.size() < sizeof(h)) return absl::DataLossError("ZeRO shard: truncated header");
  std::memcpy(&h, shard.data(), sizeof(h));
  if (std::memcmp(h.magic, ShardHeader().magic, sizeof(h.magic)) != 0) {
    return absl::DataLossError("not a ZeRO state shard (bad magic)");
  }
  if (h.layout_total != layout.total()) {
    return absl::FailedPreconditionError(absl::StrCat("shard of a model with ", h.layout_total,
                                                      " floats; this model has ", layout.total()));
  }
  const Partition p = h.stage == 0   ? Partition::Build(layout, 1, 0, int64_t{1} << 62)
                      : h.stage <= 2 ? Partition::Build(layout, h.world, h.rank, reduce_bucket_size)
                                     : Partition::Build(layout, h.world, h.rank, 1);
  const int64_t n = p.owned_total();
  if (n != h.owned_total || static_cast<int64_t>(p.units().size()) != h.units ||
      shard.size() != sizeof(h) + 12 * static_cast<size_t>(n)) {
    return absl::DataLossError(
        absl::StrCat("shard of rank ", h.rank, " of ", h.world, " at stage ", h.stage,
                     " does not match the partition its writer used (reduce_bucket_size ",
                     reduce_bucket_size, ")"));
  }
  const float* base = reinterpret_cast<const float*>(shard.data() + sizeof(h));
  const float* arrays[3] = {base, base + n, base + 2 * n};
  float* flats[3] = {weights, m, v};
  for (int u = 0; u < static_cast<int>(p.units().size()); ++u) {
    const auto [first, last] = p.OwnedFlatRange(u);
    for (int a = 0; a < 3; ++a) {
      std::memcpy(flats[a] + first, arrays[a] + p.units()[u].owned_offset,
                  (last - first) * sizeof(float));
    }
  }
  return absl::OkStatus();
}

void ZeroState::LoadFull(const float* weights, const float* m, const float* v) {
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
    if (units_[u].gathered.defined()) DropGathered(u);
  }
  partition_.FlatToOwned(m, exp_avg_.data<float>());
  partition_.FlatToOwned(v, exp_avg_sq_.data<float>());
  grads_.SetZero();
  if (mixed()) {
    partition_.FlatToOwned(weights, master_.data<float>());
    std::vector<float> staged(config_.stage == 3 ? partition_.owned_total()
                                                 : partition_.padded_total());
    if (config_.stage == 3) {
      std::copy(master_.data<float>(), master_.data<float>() + staged.size(), staged.data());
    } else {
      partition_.FlatToPadded(weights, staged.data());
    }
    kernels::FloatToHalf(half(), params_.data<uint16_t>(), staged.data(),
                         static_cast<int64_t>(staged.size()));
  } else if (config_.stage == 3) {
    partition_.FlatToOwned(weights, params_.data<float>());
  } else {
    partition_.FlatToPadded(weights, params_.data<float>());
  }
}

}  // namespace dstrain::zero
