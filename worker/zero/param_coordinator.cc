#include "worker/zero/param_coordinator.h"

namespace dstrain::zero {

void ParamCoordinator::BeginMicroBatch() {
  position_ = 0;
  broken_ = false;
  recording_.clear();
}

void ParamCoordinator::Record(int unit) {
  if (!training_) return;
  recording_.push_back(unit);
  if (complete_ && !broken_ && (position_ >= trace_.size() || trace_[position_] != unit)) {
    broken_ = true;  // prefetching stops until the order is recorded again
  }
  ++position_;
}

void ParamCoordinator::EndMicroBatch() {
  if (!training_) return;
  if (complete_ && (broken_ || recording_.size() != trace_.size())) ++invalidations_;
  trace_ = recording_;
  complete_ = true;
}

std::vector<int> ParamCoordinator::Prefetch(absl::FunctionRef<bool(int)> gathered,
                                            int64_t in_flight, int64_t live) const {
  std::vector<int> out;
  if (!Following()) return out;
  std::vector<bool> chosen(partition_.units().size(), false);
  for (size_t j = position_; j < trace_.size(); ++j) {
    const int v = trace_[j];
    if (gathered(v) || chosen[v]) continue;
    const int64_t n = partition_.padded_numel(v);
    if (in_flight + n > config_.prefetch_bucket_size) break;
    if (live + n > config_.max_live_parameters) break;
    out.push_back(v);
    chosen[v] = true;
    in_flight += n;
    live += n;
  }
  return out;
}

bool ParamCoordinator::KeepForReuse(int unit, int64_t live) const {
  if (!Following() || live > config_.max_live_parameters) return false;
  int64_t distance = 0;
  for (size_t j = position_; j < trace_.size(); ++j) {
    if (trace_[j] == unit) return distance <= config_.max_reuse_distance;
    distance += partition_.padded_numel(trace_[j]);
  }
  return false;  // not used again in this micro-batch
}

}  // namespace dstrain::zero
