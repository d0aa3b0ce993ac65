#include "worker/comm/shm/wait.h"

#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace dstrain::comm::shm_internal {

namespace {

// Spinning covers a peer that is a step behind by a few microseconds; yielding covers ranks that
// share a core; past that the waiter sleeps. Sleeps are capped so the waiter looks at Abort, the
// failure record and the deadline that often.
constexpr int kSpins = 2000;
constexpr int kYields = 64;
constexpr absl::Duration kMaxSleep = absl::Milliseconds(5);
constexpr absl::Duration kLivenessInterval = absl::Milliseconds(50);

// The low 32 bits of a flag's value (little-endian: the first word), what futex(2) compares.
uint32_t* FutexWord(Flag& flag) { return reinterpret_cast<uint32_t*>(&flag.value); }

void FutexWait(Flag& flag, uint32_t seen, absl::Duration timeout) {
  const struct timespec ts = absl::ToTimespec(timeout);
  // Not FUTEX_PRIVATE_FLAG: the word lives in memory shared between processes.
  syscall(SYS_futex, FutexWord(flag), FUTEX_WAIT, seen, &ts, nullptr, 0);
}

}  // namespace

void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

void Publish(Flag& flag, uint64_t value) {
  flag.value.store(value, std::memory_order_release);
  // Orders the store above before the load below (a waiter increments `waiters` before it checks
  // the value one last time and sleeps): either it sees the value, or we see it waiting.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (flag.waiters.load(std::memory_order_relaxed) != 0) {
    syscall(SYS_futex, FutexWord(flag), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
  }
}

bool ProcessGone(int64_t pid) {
  if (pid <= 0 || pid == getpid()) return false;
  if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return true;
  // A killed child stays a zombie until its parent reaps it: dead all the same.
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%lld/stat", static_cast<long long>(pid));
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return false;  // cannot tell: rely on the timeout
  char buf[512];
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* paren = std::strrchr(buf, ')');  // the command name may hold spaces and parens
  if (paren == nullptr || paren[1] == '\0' || paren[2] == '\0') return false;
  return paren[2] == 'Z' || paren[2] == 'X';
}

absl::Status WaitAll(const WaitBounds& bounds, int size, int skip,
                     absl::FunctionRef<Flag&(int rank)> flag_of, uint64_t target,
                     absl::string_view what) {
  int first_behind = 0;  // ranks before this one are known to be ready
  auto ready = [&]() {
    for (; first_behind < size; ++first_behind) {
      if (first_behind == skip) continue;
      if (flag_of(first_behind).value.load(std::memory_order_acquire) < target) return false;
    }
    return true;
  };
  auto behind = [&]() {
    std::vector<int> ranks;
    for (int q = 0; q < size; ++q) {
      if (q != skip && flag_of(q).value.load(std::memory_order_acquire) < target) {
        ranks.push_back(q);
      }
    }
    return ranks;
  };
  for (int i = 0; i < kSpins; ++i) {
    if (ready()) return absl::OkStatus();
    CpuRelax();
  }
  absl::Time next_liveness = absl::Now();
  for (int round = 0;; ++round) {
    if (ready()) return absl::OkStatus();
    if (bounds.aborted != nullptr && bounds.aborted->load(std::memory_order_acquire)) {
      return absl::AbortedError("aborted");
    }
    if (std::optional<std::string> failure = bounds.segment->Failure()) {
      return absl::AbortedError(*failure);
    }
    const absl::Time now = absl::Now();
    if (now >= bounds.deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("timed out after ", absl::FormatDuration(bounds.timeout),
                       " waiting for rank(s) [", absl::StrJoin(behind(), ", "), "] ", what));
    }
    if (now >= next_liveness) {
      next_liveness = now + kLivenessInterval;
      std::vector<int> dead;
      std::vector<int64_t> pids;
      for (int q : behind()) {
        const int64_t pid = bounds.segment->pid(q);
        if (ProcessGone(pid)) {
          dead.push_back(q);
          pids.push_back(pid);
        }
      }
      if (!dead.empty()) {
        return absl::AbortedError(absl::StrCat("rank(s) [", absl::StrJoin(dead, ", "),
                                               "] died (pid ", absl::StrJoin(pids, ", "),
                                               ") while this rank waited for them ", what));
      }
    }
    if (round < kYields) {
      sched_yield();
      continue;
    }
    Flag& flag = flag_of(first_behind);
    flag.waiters.fetch_add(1, std::memory_order_seq_cst);
    const uint64_t seen = flag.value.load(std::memory_order_seq_cst);
    if (seen < target) {
      FutexWait(flag, static_cast<uint32_t>(seen),
                std::min(kMaxSleep, bounds.deadline - absl::Now()));
    }
    flag.waiters.fetch_sub(1, std::memory_order_relaxed);
  }
}

}  // namespace dstrain::comm::shm_internal
