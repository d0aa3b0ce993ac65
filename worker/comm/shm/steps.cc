#include "worker/comm/shm/steps.h"

#include "absl/strings/str_cat.h"

namespace dstrain::comm::shm_internal {

absl::Status Steps::WaitFor(RankFlag which, uint64_t target, const char* what) {
  if (target == 0) return absl::OkStatus();
  return WaitAll(
      bounds_, size(), /*skip=*/-1,
      [this, which](int q) -> Flag& { return segment_->rank_flag(q, which); }, target,
      absl::StrCat(what, " (step ", step_, ")"));
}

absl::Status Steps::Begin() {
  // Step s - 2 used the same buffer; its done value is s - 1.
  return WaitFor(kDone, step_ >= 2 ? step_ - 1 : 0, "to free the staging buffer");
}

absl::Status Steps::Arrive() {
  Publish(segment_->rank_flag(rank_, kArrive), step_ + 1);
  return WaitFor(kArrive, step_ + 1, "to arrive");
}

absl::Status Steps::Reduced() {
  Publish(segment_->rank_flag(rank_, kReduced), step_ + 1);
  return WaitFor(kReduced, step_ + 1, "to reduce their share");
}

void Steps::Done() {
  Publish(segment_->rank_flag(rank_, kDone), step_ + 1);
  ++step_;
}

absl::Status Steps::Finish() {
  Publish(segment_->rank_flag(rank_, kDone), step_ + 1);
  const absl::Status status = WaitFor(kDone, step_ + 1, "to finish with this rank's buffer");
  ++step_;
  return status;
}

}  // namespace dstrain::comm::shm_internal
