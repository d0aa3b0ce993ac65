#include "worker/zero/gradient_buckets.h"

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/zero/zero_state.h"

namespace dstrain::zero {

using tensor::MemoryCategory;
using tensor::Tensor;
using tensor::View;

GradientBuckets::GradientBuckets(ZeroState* owner)
    : z_(*owner), buckets_(owner->partition().units().size()) {}

GradientBuckets::~GradientBuckets() {
  for (Bucket& b : buckets_) {
    if (b.reduce) (void)b.reduce->Wait();
  }
}

absl::StatusOr<View> GradientBuckets::Target(int module, bool* unwritten) {
  const Partition& p = z_.partition_;
  const int u = p.unit_of_module(module);
  const Unit& unit = p.units()[u];
  Bucket& b = buckets_[u];
  if (!b.buffer.defined()) {
    const bool f32 = z_.reduction_.dtype == DType::kF32;
    // The matrix products write most of an f32 bucket: zeroing it all first would be one more
    // pass over the unit's gradients for every micro-batch.
    DT_ASSIGN_OR_RETURN(
        b.buffer, f32 ? Tensor::Empty(z_.comm_allocator(), DType::kF32, {p.padded_numel(u)},
                                      MemoryCategory::kCommBuffers)
                      : Tensor::Zeros(z_.comm_allocator(), z_.reduction_.dtype, {p.padded_numel(u)},
                                      MemoryCategory::kCommBuffers));
    if (f32) z_.ZeroAroundMatrices(b.buffer.view(), unit.begin, unit.first_module, unit.end_module);
    b.unwritten.assign(unit.end_module - unit.first_module, f32);
  }
  const int i = module - unit.first_module;
  // Only ReleaseGrads asks without `unwritten`, for a 16-bit bucket (zeroed whole) after the
  // module's AcquireGrads.
  DT_CHECK(unwritten != nullptr || !b.unwritten[i]);
  if (unwritten != nullptr) *unwritten = b.unwritten[i];
  b.unwritten[i] = false;
  DT_RETURN_IF_ERROR(z_.ops_->status());
  const int64_t off = z_.layout_.modules()[module].offset - unit.begin;
  return b.buffer.view().Sub(off, z_.ModuleFloats(module));
}

absl::Status GradientBuckets::Done(int module) {
  const Partition& p = z_.partition_;
  const int u = p.unit_of_module(module);
  const Unit& unit = p.units()[u];
  Bucket& b = buckets_[u];
  if (++b.released < unit.end_module - unit.first_module) return absl::OkStatus();
  b.released = 0;
  DT_RETURN_IF_ERROR(Launch(u));
  reducing_.push_back(u);
  const size_t max_in_flight = z_.config_.overlap_comm ? 2 : 0;
  while (!reducing_.empty() &&
         (reducing_.size() > max_in_flight || buckets_[reducing_.front()].reduce == nullptr ||
          buckets_[reducing_.front()].reduce->IsCompleted())) {
    DT_RETURN_IF_ERROR(Collect(reducing_.front()));
    reducing_.pop_front();
  }
  return absl::OkStatus();
}

absl::Status GradientBuckets::Launch(int u) {
  Bucket& b = buckets_[u];
  b.reduced = true;
  if (!z_.distributed()) return absl::OkStatus();  // the bucket already is the whole (own) chunk
  const Partition& p = z_.partition_;
  const Unit& unit = p.units()[u];
  const View whole = b.buffer.view();
  z_.PreScale(whole);
  z_.BeforeCollective();
  DT_ASSIGN_OR_RETURN(b.reduce, z_.ReduceUnit(whole, whole.Sub(p.rank() * unit.chunk, unit.chunk)));
  return absl::OkStatus();
}

absl::Status GradientBuckets::Collect(int u) {
  Bucket& b = buckets_[u];
  DT_RETURN_IF_ERROR(z_.Wait(b.reduce));
  const Partition& p = z_.partition_;
  const Unit& unit = p.units()[u];
  const View mine = b.buffer.view().Sub(p.rank() * unit.chunk, unit.chunk);
  if (z_.distributed()) z_.PostScale(mine);
  // The gradients are zero at the start of a step, so the first micro-batch's add is a copy.
  z_.ops_->AddInto(z_.grads_.view().Sub(unit.owned_offset, unit.chunk), mine);
  z_.StreamUnitGrads(unit);  // the boundary micro-batch's: to the host optimizer, if any
  b.buffer = Tensor();
  b.reduced = false;
  return absl::OkStatus();
}

absl::Status GradientBuckets::Finish() {
  reducing_.clear();
  for (int u = 0; u < static_cast<int>(buckets_.size()); ++u) {
    if (buckets_[u].reduced) DT_RETURN_IF_ERROR(Collect(u));
    if (buckets_[u].buffer.defined()) {
      return absl::InternalError(
          absl::StrCat("gradients of unit ", u, " (from module ",
                       z_.layout_.modules()[z_.partition_.units()[u].first_module].name,
                       ") were acquired but not all its modules released them"));
    }
  }
  return absl::OkStatus();
}

bool GradientBuckets::Idle() const {
  for (const Bucket& b : buckets_) {
    if (b.reduced) return false;
  }
  return true;
}

}  // namespace dstrain::zero
