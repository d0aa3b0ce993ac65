// CompletionWork: a Work whose result is set once by whoever runs the operation (a backend's
// worker thread, a waiter), shared through a WorkState so the Work may outlive its communicator.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"

namespace dstrain::comm {

class WorkState {
 public:
  // Sets the result; only the first call counts. Returns whether this call set it.
  bool Complete(absl::Status status);
  bool IsCompleted();
  // Blocks until completed or `timeout` passes (then kDeadlineExceeded; the operation goes on).
  absl::Status Wait(absl::Duration timeout);

 private:
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

class CompletionWork final : public Work {
 public:
  explicit CompletionWork(std::shared_ptr<WorkState> state) : state_(std::move(state)) {}
  bool IsCompleted() override { return state_->IsCompleted(); }
  absl::Status Wait(absl::Duration timeout = absl::InfiniteDuration()) override {
    return state_->Wait(timeout);
  }

 private:
  std::shared_ptr<WorkState> state_;
};

// A Work that is already complete with `status`.
std::unique_ptr<Work> CompletedWork(absl::Status status);

}  // namespace dstrain::comm
