// Steps: the synchronization every collective of a ShmCommunicator is built from.
//
// A collective is a sequence of steps; the communicator numbers them 0, 1, 2, ... across all its
// collectives (every rank runs the same collectives with the same counts, so the numbers agree).
// Step s uses staging buffer s % 2 (each rank's slot and the shared output), so step s + 1 can
// fill the other buffer while slow peers still read step s. A step:
//
//   Begin     wait until every rank finished step s - 2 (the buffer is free again)
//   ...       fill this rank's slot (copy-in)
//   Arrive    publish arrive = s + 1; wait until every rank did
//   ...       read the others' slots (reduce this rank's share into the output buffer, or copy out)
//   Reduced   (AllReduce only) publish reduced = s + 1; wait until every rank did
//   ...       read the output buffer (copy-out)
//   Done      publish done = s + 1
//
// A collective on shared buffers (windows.h), whose peers read and write this rank's own buffer
// rather than its slot, ends with Finish instead: done = s + 1, then wait until every rank
// published it, so the buffer goes back to the caller only when nobody touches it any more.
//
// Flag values only grow and a rank publishes each one after the memory it guards is written
// (release) and reads peers' memory only after seeing their flag (acquire), so no lock is needed.
//
// Not thread-safe: one communicator's worker thread.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "worker/comm/shm/segment.h"
#include "worker/comm/shm/wait.h"

namespace dstrain::comm::shm_internal {

class Steps {
 public:
  Steps(Segment* segment, int rank) : segment_(segment), rank_(rank) {}

  int rank() const { return rank_; }
  int size() const { return segment_->size(); }
  int64_t chunk_bytes() const { return segment_->chunk_bytes(); }

  // The bounds of the collective about to run (its deadline, Abort, the failure record).
  void set_bounds(const WaitBounds& bounds) { bounds_ = bounds; }

  absl::Status Begin();
  absl::Status Arrive();
  absl::Status Reduced();
  void Done();
  absl::Status Finish();

  // The current step's buffers.
  char* my_slot() const { return segment_->slot(rank_, buffer()); }
  char* slot(int rank) const { return segment_->slot(rank, buffer()); }
  char* out() const { return segment_->out(buffer()); }

 private:
  int buffer() const { return static_cast<int>(step_ % 2); }
  absl::Status WaitFor(RankFlag which, uint64_t target, const char* what);

  Segment* const segment_;
  const int rank_;
  uint64_t step_ = 0;
  WaitBounds bounds_;
};

}  // namespace dstrain::comm::shm_internal
