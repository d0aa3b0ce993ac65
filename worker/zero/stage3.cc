#include "worker/zero/stage3.h"

#include <algorithm>

#include "common/status/status_macros.h"

namespace dstrain::zero {
namespace {

using tensor::MemoryCategory;
using tensor::Tensor;
using tensor::View;

// Stage 3 keeps a unit gathered when every parameter in it is small (DeepSpeed's
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

Stage3::Stage3(const model::ParamLayout& layout, const config::ZeroConfig& config,
               comm::Communicator* dp, comm::CommOptions comm, device::Ops* ops,
               Partition partition, DType storage, GradientReduction reduction)
    : ZeroState(layout, config, dp, comm, ops, std::move(partition), storage, reduction,
                /*params_partitioned=*/true, /*grads_partitioned=*/true),
      units_(partition_.units().size()),
      coordinator_(partition_, config_),
      buckets_(this) {
  const std::vector<bool> persistent = PersistentUnits(layout_, partition_, config_);
  for (size_t u = 0; u < persistent.size(); ++u) units_[u].persistent = persistent[u];
}

Stage3::~Stage3() {
  // A gather still in flight writes into a buffer about to be freed: wait for it first.
  for (UnitState& u : units_) {
    if (u.gather) (void)u.gather->Wait();
  }
}

absl::StatusOr<View> Stage3::ModuleStorage(int module, model::Pass) {
  const int u = partition_.unit_of_module(module);
  coordinator_.Record(u);
  DT_RETURN_IF_ERROR(EnsureGathered(u));
  ++units_[u].users;
  DT_RETURN_IF_ERROR(Prefetch());
  const int64_t off = layout_.modules()[module].offset - partition_.units()[u].begin;
  return units_[u].gathered.view().Sub(off, ModuleFloats(module));
}

absl::Status Stage3::ParamsReleased(int module) {
  const int u = partition_.unit_of_module(module);
  UnitState& s = units_[u];
  if (s.users <= 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("ReleaseParams: module ", layout_.modules()[module].name, " is not acquired"));
  }
  if (--s.users == 0 && !s.persistent && !coordinator_.KeepForReuse(u, live_floats_)) DropUnit(u);
  return absl::OkStatus();
}

absl::Status Stage3::StartGather(int u) {
  UnitState& s = units_[u];
  const Unit& unit = partition_.units()[u];
  const int64_t n = partition_.padded_numel(u);
  DT_ASSIGN_OR_RETURN(
      s.gathered, Tensor::Empty(ops_->allocator(), storage_, {n}, MemoryCategory::kGatheredParams));
  live_floats_ += n;
  View mine;
  if (param_swap() != nullptr || params_on_host_) {
    // offload_param: this rank's chunk crosses from host memory (from NVMe: through a swap
    // buffer, read ahead where Prefetch could) into its place in the gathered buffer, and the
    // all-gather runs in place.
    mine = s.gathered.view().Sub(partition_.rank() * unit.chunk, unit.chunk);
    if (param_swap() != nullptr) {
      DT_ASSIGN_OR_RETURN(const char* chunk, param_swap()->Acquire(u));
      ops_->CopyFromHost(mine, chunk);
      param_swap()->Release(u);
    } else {
      // Queued behind the computation, so a prefetch's copy runs on the copy engine while the
      // current module computes (page-locked memory; pageable memory is staged on the call).
      // The host rewrites params_ only after waiting for a fence recorded later (the update,
      // AdamWOnHost), or through copies on the same stream (docs/offload.md).
      ops_->CopyFromHostAsync(mine, params_.view().Sub(unit.owned_offset, unit.chunk).data());
    }
  } else {
    mine = params_.view().Sub(unit.owned_offset, unit.chunk);
  }
  if (!distributed()) {
    // One rank's chunk is the whole unit.
    if (mine.data() != s.gathered.raw()) ops_->Copy(s.gathered.view(), mine);
    return ops_->status();
  }
  BeforeCollective();
  DT_ASSIGN_OR_RETURN(s.gather, dp_->AllGather(Buf(mine), Buf(s.gathered.view()), comm_));
  traffic_.all_gather += static_cast<int64_t>(DTypeSize(storage_)) * unit.chunk * (world() - 1);
  return absl::OkStatus();
}

absl::Status Stage3::EnsureGathered(int u) {
  UnitState& s = units_[u];
  if (!s.gathered.defined()) DT_RETURN_IF_ERROR(StartGather(u));
  return Wait(s.gather);
}

void Stage3::DropUnit(int u) {
  UnitState& s = units_[u];
  if (s.gather) (void)Wait(s.gather);  // its buffer is being written: finish first
  live_floats_ -= s.gathered.numel();
  s.gathered = Tensor();
}

void Stage3::DropGathered() {
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
    if (units_[u].gathered.defined()) DropUnit(u);
  }
}

absl::Status Stage3::Prefetch() {
  int64_t in_flight = 0;
  for (const UnitState& s : units_) {
    if (s.gather) in_flight += s.gathered.numel();
  }
  const std::vector<int> next = coordinator_.Prefetch(
      [&](int u) { return units_[u].gathered.defined(); }, in_flight, live_floats_);
  for (int u : next) {
    // Parameters on NVMe: a unit's gather starts once its chunk's read has landed; until then
    // the read runs behind the computation (offload_param.buffer_count reads at most), and a
    // later Prefetch, or the acquisition, starts the gather.
    if (param_swap() != nullptr && !param_swap()->Ready(u)) {
      param_swap()->Prefetch(u);
      continue;
    }
    DT_RETURN_IF_ERROR(StartGather(u));
  }
  return absl::OkStatus();
}

absl::Status Stage3::FinishBackward() {
  DT_RETURN_IF_ERROR(buckets_.Finish());
  // The order just seen becomes the record.
  coordinator_.EndMicroBatch();
  return ops_->status();
}

absl::Status Stage3::FinishStep() {
  ops_->Fill(grads_.view(), 0.f);
  // Every gathered copy, persistent ones included, is now stale.
  for (const UnitState& u : units_) {
    if (u.users != 0) {
      return absl::FailedPreconditionError("FinishStep with a module still acquired");
    }
  }
  DropGathered();
  return ops_->status();
}

absl::Status Stage3::GetParams(View flat) {
  if (mixed()) return GatherMasterInto(flat);
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
    DT_RETURN_IF_ERROR(EnsureGathered(u));
    const Unit& unit = partition_.units()[u];
    if (!flat.empty()) {
      ops_->Copy(flat.Sub(unit.begin, unit.numel()),
                 units_[u].gathered.view().Sub(0, unit.numel()));
    }
    if (units_[u].users == 0 && !units_[u].persistent) DropUnit(u);
  }
  return ops_->status();
}

bool Stage3::Idle() const {
  for (const UnitState& u : units_) {
    if (u.users != 0) return false;
  }
  return buckets_.Idle();
}

}  // namespace dstrain::zero
