// Scheduler: the queue of PENDING jobs and gang placement of their ranks on free worker slots
// (docs/service.md, "Scheduling").
//
// Pure and deterministic: it reads the free slots it is given and returns placements; it never
// touches the WorkerRegistry. The caller (the server, under its one mutex) applies each placement
// with WorkerRegistry::Assign, moves the job to SCHEDULED and persists both. Not thread-safe.
//
// Order: higher priority first; equal priorities in submission order (submit_seq ascending; equal
// seqs, which a well-behaved caller never produces, by job_id).
//
// Policy (NOTE [head-of-line blocking]): by default the queue is strict. Schedule places the head
// job while its whole gang fits and stops at the first job that does not fit; the jobs behind it
// wait even when they would fit. This keeps a large gang from starving behind a stream of small
// jobs that would otherwise take every slot as it frees up; the price is idle slots while the
// head waits. A job whose world_size exceeds every slot the cluster has blocks the queue until
// enough workers register (the caller can tell the user, comparing with the registry's
// total_slots) or it is cancelled. With SchedulerOptions::backfill, jobs behind a head that does
// not fit may start in queue order when they fit; large gangs can then starve.
//
// Placement: all world_size ranks or none (gang). Ranks go to as few workers as possible: workers
// are taken in order of most free slots (ties by worker_id) and each is filled, lowest slot first,
// with consecutive ranks, so ranks that talk most (neighbours in rings and pipelines) share a
// host.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "proto/job.pb.h"

namespace dstrain::coordinator {

struct SchedulerOptions {
  // Let jobs behind a head that does not fit start when they fit (see the header comment).
  bool backfill = false;
};

// Where one job's gang goes.
struct Placement {
  std::string job_id;
  // One entry per rank, ordered by rank 0..world_size-1; no (worker_id, slot) twice.
  std::vector<v1::RankAssignment> ranks;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options = {}) : options_(options) {}

  // Queues a job. submit_seq orders jobs of equal priority (FIFO); the caller hands out
  // increasing numbers and persists them, so a restarted coordinator rebuilds the same order by
  // enqueueing its PENDING jobs again. A job that goes back to waiting (a restart) keeps its
  // original submit_seq and so its place among equals. INVALID_ARGUMENT for an empty job_id or a
  // world_size < 1; ALREADY_EXISTS when job_id is queued.
  absl::Status Enqueue(absl::string_view job_id, int32_t priority, int world_size,
                       uint64_t submit_seq);

  // Takes a job out of the queue (cancelled); false when it was not queued.
  bool Remove(absl::string_view job_id);

  bool Contains(absl::string_view job_id) const;
  size_t size() const { return queue_.size(); }
  bool empty() const { return queue_.empty(); }

  // 0-based place of job_id in the queue (0 = next to be placed), or nullopt when not queued.
  std::optional<int> Position(absl::string_view job_id) const;

  // The queued job ids in scheduling order.
  std::vector<std::string> PendingIds() const;

  // Places queued jobs on `free_slots` (worker_id -> its free slot indices, as
  // WorkerRegistry::FreeSlots returns; duplicates are ignored) following the policy above,
  // removes the placed jobs from the queue and returns their placements in the order they were
  // placed. Slots are never handed out twice within one call.
  std::vector<Placement> Schedule(const std::map<std::string, std::vector<int>>& free_slots);

 private:
  struct Entry {
    int32_t priority;
    uint64_t submit_seq;
    std::string job_id;
    int world_size;

    bool operator<(const Entry& other) const {
      // Higher priority first, then older first, then by id for a total order.
      if (priority != other.priority) return priority > other.priority;
      if (submit_seq != other.submit_seq) return submit_seq < other.submit_seq;
      return job_id < other.job_id;
    }
  };

  const SchedulerOptions options_;
  std::set<Entry> queue_;
  // job_id -> its key in queue_.
  std::map<std::string, Entry> by_id_;
};

}  // namespace dstrain::coordinator
