#include "worker/offload/fault_injection_queue.h"

#include "common/status/status_macros.h"

namespace dstrain::offload {

void FaultPlan::Add(IoFault fault) {
  std::lock_guard<std::mutex> lock(mu_);
  faults_.push_back(fault);
}

bool FaultPlan::Match(const IoRequest& r, IoFault* hit) {
  std::lock_guard<std::mutex> lock(mu_);
  for (IoFault& f : faults_) {
    if (f.times <= 0 || f.write != r.write || r.offset < f.min_offset) continue;
    if (f.kind == IoFault::Kind::kShort && r.len < 2 * kIoAlign) continue;  // nothing to cut
    --f.times;
    ++injected_;
    *hit = f;
    return true;
  }
  return false;
}

int FaultPlan::injected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return injected_;
}

void FaultInjectionQueue::Prepare(const IoRequest& request) {
  IoRequest r = request;
  IoFault fault;
  if (plan_->Match(r, &fault)) {
    if (fault.kind == IoFault::Kind::kError) {
      failed_.push_back({r.tag, -static_cast<int64_t>(fault.error)});
      return;
    }
    // Half of it, in whole aligned blocks: what a partial transfer of a direct file looks like.
    r.len = static_cast<uint32_t>(r.len / 2 / kIoAlign * kIoAlign);
  }
  base_->Prepare(r);
  ++base_prepared_;
}

absl::Status FaultInjectionQueue::Submit() {
  if (base_prepared_ == 0) return absl::OkStatus();
  DT_RETURN_IF_ERROR(base_->Submit());
  base_in_flight_ += base_prepared_;
  base_prepared_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<IoCompletion>> FaultInjectionQueue::Reap() {
  if (!failed_.empty()) {
    std::vector<IoCompletion> out(failed_.begin(), failed_.end());
    failed_.clear();
    return out;
  }
  DT_ASSIGN_OR_RETURN(std::vector<IoCompletion> out, base_->Reap());
  base_in_flight_ -= static_cast<int>(out.size());
  return out;
}

}  // namespace dstrain::offload
