// Windows: the shared host buffers of one ShmCommunicator (Communicator::AllocateHostBuffer), and
// the step that finds out whether a collective's buffers lie in them on every rank.
//
// Window k is one shared file (shared_file.h) of size() equal parts that every rank maps; rank r's
// buffer is part r, and every rank can read and write every part. Windows are numbered in
// allocation order, which is the same on every rank (the allocation is collective), so (window,
// offset) names the same place in every rank's part. A collective whose buffer lies in a window
// on every rank runs without staging (algorithms.h, the *Shared variants): each rank reads the
// peers' parts of its share where they are and writes results straight into the peers' buffers.
//
// Thread-safety: Add and Remove run on the threads that allocate and free; Find and Address on
// the communicator's worker thread; all of them lock.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "worker/comm/shm/steps.h"

namespace dstrain::comm::shm_internal {

class Windows {
 public:
  explicit Windows(int rank) : rank_(rank) {}

  void Add(int64_t id, char* base, int64_t part_bytes);
  void Remove(int64_t id);

  struct Place {
    int64_t window = -1;
    int64_t offset = 0;
  };
  // Where [p, p + bytes) lies in this rank's part of a window, if it does.
  std::optional<Place> Find(const void* p, int64_t bytes) const;
  // `rank`'s part of `window` at `offset`; null when this rank has no such window.
  char* Address(int64_t window, int rank, int64_t offset) const;

 private:
  struct Window {
    char* base;
    int64_t part_bytes;
  };
  const int rank_;
  mutable absl::Mutex mu_;
  std::map<int64_t, Window> windows_ ABSL_GUARDED_BY(mu_);
};

// Collectives of fewer bytes than this are staged even when their buffers lie in windows: the
// step below costs about what staging them does.
inline constexpr int64_t kSharedMinBytes = 64 << 10;

// One step of every rank: each posts where `buffer` lies (or that it lies in no window), and all
// agree. Returns every rank's address of its buffer (index = rank) when every rank's buffer lies
// in a window that every rank maps; the caller then runs the shared collective and ends the step
// with Steps::Finish. Returns nothing otherwise, with the step ended (Steps::Done): the caller
// stages the collective. Collective: every rank calls it for the same collective.
absl::StatusOr<std::optional<std::vector<char*>>> AgreeOnWindows(Steps& steps,
                                                                 const Windows& windows,
                                                                 const void* buffer, int64_t bytes);

}  // namespace dstrain::comm::shm_internal
