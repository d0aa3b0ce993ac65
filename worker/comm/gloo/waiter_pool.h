// WaiterPool: the threads that wait for GlooCommunicator's Send/Recv to complete.
//
// One thread per wait in flight, so that no wait is ever queued behind another, which could create
// false dependencies between ranks (a Recv from rank 2 held up until a Recv from rank 1 completes).
// Threads that finish their task are kept for reuse.
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace dstrain::comm::gloo_internal {

// Thread-safe. Its threads run with SIGPIPE blocked (sigpipe.h).
class WaiterPool {
 public:
  WaiterPool() = default;
  ~WaiterPool() { Stop(); }
  WaiterPool(const WaiterPool&) = delete;
  WaiterPool& operator=(const WaiterPool&) = delete;

  // Runs `task` on an idle thread, or on a new one when none is idle.
  void Submit(std::function<void()> task);

  // Runs the remaining tasks, then joins the threads.
  void Stop();

 private:
  void Loop();

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  int idle_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dstrain::comm::gloo_internal
