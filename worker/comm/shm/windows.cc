#include "worker/comm/shm/windows.h"

#include <cstring>

#include "common/status/status_macros.h"

namespace dstrain::comm::shm_internal {

void Windows::Add(int64_t id, char* base, int64_t part_bytes) {
  absl::MutexLock lock(&mu_);
  windows_[id] = Window{base, part_bytes};
}

void Windows::Remove(int64_t id) {
  absl::MutexLock lock(&mu_);
  windows_.erase(id);
}

std::optional<Windows::Place> Windows::Find(const void* p, int64_t bytes) const {
  const char* c = static_cast<const char*>(p);
  absl::MutexLock lock(&mu_);
  for (const auto& [id, w] : windows_) {
    const char* mine = w.base + rank_ * w.part_bytes;
    if (c >= mine && c + bytes <= mine + w.part_bytes) return Place{id, c - mine};
  }
  return std::nullopt;
}

char* Windows::Address(int64_t window, int rank, int64_t offset) const {
  absl::MutexLock lock(&mu_);
  auto it = windows_.find(window);
  if (it == windows_.end()) return nullptr;
  return it->second.base + rank * it->second.part_bytes + offset;
}

absl::StatusOr<std::optional<std::vector<char*>>> AgreeOnWindows(Steps& steps,
                                                                 const Windows& windows,
                                                                 const void* buffer,
                                                                 int64_t bytes) {
  // Slot layout for this step: [0, 8) the window (-1: none), [8, 16) the offset in it, [16, 24)
  // this rank's verdict (1: it maps every rank's window).
  DT_RETURN_IF_ERROR(steps.Begin());
  const std::optional<Windows::Place> place = windows.Find(buffer, bytes);
  const Windows::Place posted = place.value_or(Windows::Place{});
  std::memcpy(steps.my_slot(), &posted.window, 8);
  std::memcpy(steps.my_slot() + 8, &posted.offset, 8);
  DT_RETURN_IF_ERROR(steps.Arrive());
  std::vector<char*> addresses(steps.size(), nullptr);
  int64_t verdict = 1;
  for (int q = 0; q < steps.size(); ++q) {
    Windows::Place theirs;
    std::memcpy(&theirs.window, steps.slot(q), 8);
    std::memcpy(&theirs.offset, steps.slot(q) + 8, 8);
    addresses[q] = theirs.window < 0 ? nullptr : windows.Address(theirs.window, q, theirs.offset);
    if (addresses[q] == nullptr) verdict = 0;
  }
  std::memcpy(steps.my_slot() + 16, &verdict, 8);
  DT_RETURN_IF_ERROR(steps.Reduced());
  for (int q = 0; q < steps.size(); ++q) {
    int64_t v;
    std::memcpy(&v, steps.slot(q) + 16, 8);
    if (v != 1) {
      steps.Done();
      return std::nullopt;
    }
  }
  return addresses;
}

}  // namespace dstrain::comm::shm_internal
