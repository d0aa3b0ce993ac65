#include "worker/trainer/drain.h"

#include <signal.h>

#include <atomic>
#include <mutex>
#include <thread>

namespace dstrain::trainer {
namespace {

std::atomic<bool> g_drain_requested{false};

}  // namespace

void StartDrainWatcher() {
  static std::once_flag once;
  std::call_once(once, [] {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
    std::thread([usr1] {
      int sig = 0;
      while (sigwait(&usr1, &sig) == 0) g_drain_requested = true;
    }).detach();
  });
}

bool DrainRequested() { return g_drain_requested.load(); }

}  // namespace dstrain::trainer
