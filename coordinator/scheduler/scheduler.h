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
// job while its whole gang fits and stops placing at the first job that does not fit; the jobs
// behind it wait even when they would fit. This keeps a large gang from starving behind a stream
// of small jobs that would otherwise take every slot as it frees up; the price is idle slots
// while the head waits. A job that needs more slots than the cluster has blocks the queue until
// enough workers register or it is cancelled; its queue reason says so. With
// SchedulerOptions::backfill, jobs behind a head that does not fit may start in queue order when
// they fit; large gangs can then starve.
//
// Devices (docs/service.md, "Placement"): a worker has GPU slots (one per GPU) and CPU slots, and
// a gang never mixes the two. A JOB_DEVICE_CUDA job is placed on GPU slots only, one rank per
// GPU; a JOB_DEVICE_CPU job on CPU slots only; a JOB_DEVICE_AUTO (or unspecified) job on GPU
// slots when the whole gang fits on the free GPU slots, else on CPU slots when it fits there.
// Every queued job that is not placed gets a queue reason: what it needs and what the cluster
// has ("needs 4 GPU slots; 2 registered (2 free)"), noting when it needs more than the cluster
// has at all; or, behind a blocking head, the job it waits behind.
//
// Placement: all world_size ranks or none (gang). Ranks go to as few workers as possible: workers
// are taken in order of most free slots of the chosen kind (ties by worker_id) and each is
// filled, lowest slot first, with ranks in placement order, so ranks that talk most share a host.
// Placement order is rank order (neighbours in the data-parallel ring), except for a pipelined
// job (pipeline_stages S > 1, ranks laid out as worker/pipe's grid, rank = stage · D + data rank):
// there it goes pipeline by pipeline, stage by stage (data rank 0's stages 0..S−1, then data rank
// 1's, ...), so neighbouring stages, which exchange activations and gradients every micro-batch,
// share a worker when it has the slots.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "coordinator/registry/worker_registry.h"
#include "proto/job.pb.h"

namespace dstrain::coordinator {

struct SchedulerOptions {
  // Let jobs behind a head that does not fit start when they fit (see the header comment).
  bool backfill = false;
};

// Where one job's gang goes.
struct Placement {
  std::string job_id;
  // One entry per rank, ordered by rank 0..world_size-1; no (worker_id, slot) twice; every
  // slot_kind the same.
  std::vector<v1::RankAssignment> ranks;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options = {}) : options_(options) {}

  // Queues a job. submit_seq orders jobs of equal priority (FIFO); the caller hands out
  // increasing numbers and persists them, so a restarted coordinator rebuilds the same order by
  // enqueueing its PENDING jobs again. A job that goes back to waiting (a restart) keeps its
  // original submit_seq and so its place among equals. `device` is the job's job.device.
  // INVALID_ARGUMENT for an empty job_id or a world_size < 1; ALREADY_EXISTS when job_id is
  // queued.
  // `pipeline_stages` is the job's job.pipeline_stages (must divide world_size).
  // INVALID_ARGUMENT also for pipeline_stages < 1 or not dividing world_size.
  absl::Status Enqueue(absl::string_view job_id, int32_t priority, int world_size,
                       uint64_t submit_seq, v1::JobDevice device = v1::JOB_DEVICE_AUTO,
                       int pipeline_stages = 1);

  // Takes a job out of the queue (cancelled); false when it was not queued.
  bool Remove(absl::string_view job_id);

  bool Contains(absl::string_view job_id) const;
  size_t size() const { return queue_.size(); }
  bool empty() const { return queue_.empty(); }

  // 0-based place of job_id in the queue (0 = next to be placed), or nullopt when not queued.
  std::optional<int> Position(absl::string_view job_id) const;

  // The queued job ids in scheduling order.
  std::vector<std::string> PendingIds() const;

  // Places queued jobs on `cluster` (the workers that may take ranks, with their slots by kind, as
  // WorkerRegistry::FreeSlots returns; duplicate free slots are ignored) following the policy
  // above, removes the placed jobs from the queue and returns their placements in the order they
  // were placed. Slots are never handed out twice within one call. Every job left queued gets its
  // queue reason.
  std::vector<Placement> Schedule(const std::map<std::string, WorkerSlots>& cluster);

  // Why job_id is still queued, as of the last Schedule; "" when it is not queued or no Schedule
  // has seen it yet.
  std::string QueueReason(absl::string_view job_id) const;

 private:
  struct Entry {
    int32_t priority;
    uint64_t submit_seq;
    std::string job_id;
    int world_size;
    v1::JobDevice device;
    int pipeline_stages;

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
  // job_id -> its queue reason from the last Schedule.
  std::map<std::string, std::string> reasons_;
};

}  // namespace dstrain::coordinator
