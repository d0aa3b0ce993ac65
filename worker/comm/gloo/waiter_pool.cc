#include "worker/comm/gloo/waiter_pool.h"

#include <utility>

#include "worker/comm/gloo/sigpipe.h"

namespace dstrain::comm::gloo_internal {

void WaiterPool::Submit(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  tasks_.push_back(std::move(task));
  if (static_cast<int>(tasks_.size()) > idle_) {
    threads_.emplace_back([this] { Loop(); });
  }
}

void WaiterPool::Stop() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    threads.swap(threads_);
  }
  for (std::thread& t : threads) t.join();
}

void WaiterPool::Loop() {
  BlockSigpipeInThisThread();
  absl::MutexLock lock(&mu_);
  for (;;) {
    if (!tasks_.empty()) {
      std::function<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      mu_.Unlock();
      task();
      mu_.Lock();
      continue;
    }
    if (stop_) return;
    ++idle_;
    mu_.Await(absl::Condition(
        +[](WaiterPool* p)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) { return !p->tasks_.empty() || p->stop_; },
        this));
    --idle_;
  }
}

}  // namespace dstrain::comm::gloo_internal
