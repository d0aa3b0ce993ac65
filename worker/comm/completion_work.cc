#include "worker/comm/completion_work.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"

namespace dstrain::comm {

bool WorkState::Complete(absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (done_) return false;
  done_ = true;
  status_ = std::move(status);
  return true;
}

bool WorkState::IsCompleted() {
  absl::MutexLock lock(&mu_);
  return done_;
}

absl::Status WorkState::Wait(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const bool done = mu_.AwaitWithTimeout(absl::Condition(&done_), timeout);
  if (!done) {
    return absl::DeadlineExceededError(absl::StrCat("Work::Wait: not completed after ",
                                                    absl::FormatDuration(timeout),
                                                    "; the operation is still running"));
  }
  return status_;
}

std::unique_ptr<Work> CompletedWork(absl::Status status) {
  auto state = std::make_shared<WorkState>();
  state->Complete(std::move(status));
  return std::make_unique<CompletionWork>(std::move(state));
}

}  // namespace dstrain::comm
