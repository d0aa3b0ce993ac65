// WorkerRegistry: the coordinator's view of its worker agents (docs/wire-api.md, "WorkerService"):
// who is registered, whose lease is still valid, and which (job, attempt, rank) runs in which slot
// of which worker.
//
// Pure bookkeeping over v1::Worker records: no I/O, no threads, time only from the injected
// Clock. Not thread-safe: the server holds one mutex around the registry and the scheduler, and
// persists the records returned here (List(), Find()) through the state layer.
//
// Lifecycle of a worker:
//   Register ──▶ READY ──(lease passes, ExpireLeases)──▶ LOST ──(Register)──▶ READY
// A lease is valid for [renewal, renewal + lease): at renewal + lease exactly it has lapsed. Only
// ExpireLeases declares a worker LOST; a heartbeat that arrives after the lease passed but before
// the next sweep still renews it (nothing was rescheduled yet, so nothing is inconsistent). The
// server therefore sweeps periodically, e.g. once per heartbeat_interval.
//
// Slots: a worker has a GPU slot per GPU, numbered as the GPU (slot == GpuInfo.index, 0..n-1),
// then cpu_slots CPU slots numbered n..n+cpu_slots-1 (docs/service.md, "Placement"). A slot holds
// at most one rank; the record's `ranks` lists the occupied slots, ordered by slot. Ranks disappear
// from a worker only through ReleaseJob, a re-registration or a lapsed lease; the last two hand
// them back to the caller, which restarts or fails their jobs.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/clock/clock.h"
#include "proto/worker.pb.h"

namespace dstrain::coordinator {

struct RegistryOptions {
  // A worker's lease lapses this long after its last Register or Heartbeat. Must be > 0.
  absl::Duration lease = absl::Seconds(10);
  // How often agents are told to heartbeat (RegisterWorkerResponse). Must be in (0, lease).
  absl::Duration heartbeat_interval = absl::Seconds(2);
};

// Most slots one worker may offer, GPU and CPU slots together.
inline constexpr int kMaxSlotsPerWorker = 4096;
// Longest GpuInfo.name and GpuInfo.uuid a registration may carry.
inline constexpr size_t kMaxGpuNameBytes = 256;
inline constexpr size_t kMaxGpuUuidBytes = 128;

// INVALID_ARGUMENT naming the field when `options` is unusable.
absl::Status ValidateRegistryOptions(const RegistryOptions& options);

// True for 1 to 63 characters of [a-z0-9-] starting with a letter (the rule of Job.job_id and
// RegisterWorkerRequest.worker_id).
bool IsValidId(absl::string_view id);

// The checks Register applies, usable before taking the server's lock: INVALID_ARGUMENT naming
// the offending field ("worker_id", "cpu_slots", "gpus", "gpus[1].index", "gpus[0].name", ...).
absl::Status ValidateRegisterRequest(const v1::RegisterWorkerRequest& request);

// Slots a worker record offers: one per GPU plus cpu_slots.
int SlotCount(const v1::Worker& worker);

// The kind of a slot of `worker` (GPU for slot < gpus_size()); slot must be in [0, SlotCount).
v1::SlotKind SlotKindOf(const v1::Worker& worker, int slot);

// A READY worker's slots by kind, as the scheduler takes them.
struct WorkerSlots {
  // Free slot numbers of each kind, ascending.
  std::vector<int> free_gpu;
  std::vector<int> free_cpu;
  // Slots of each kind in all, free or not.
  int gpu = 0;
  int cpu = 0;
};

// One rank placed on a worker.
struct PlacedRank {
  std::string worker_id;
  // job_id, attempt, rank, slot and the last state reported for it.
  v1::RankStatus rank;
};

struct RegisterResult {
  // The new record: READY, no ranks, leased from now.
  v1::Worker worker;
  // A record with this worker_id existed (READY or LOST) and was replaced.
  bool replaced = false;
  // Ranks the previous incarnation held (empty when it was LOST or new), ordered by slot. Their
  // trainers died with the old agent: the caller restarts or fails those (job, attempt)s.
  std::vector<v1::RankStatus> lost_ranks;
};

struct HeartbeatResult {
  // The renewed lease's end, on the registry's clock (HeartbeatResponse.lease_expire_time).
  absl::Time lease_expire_time;
  // Live (STARTING or RUNNING) ranks the worker reported that are not placed on it: an attempt
  // already released or a rank placed elsewhere. The caller sends a STOP for each.
  std::vector<v1::RankStatus> strays;
};

struct LostWorker {
  // The record after the transition: LOST, ranks cleared.
  v1::Worker worker;
  // The ranks it held when its lease lapsed, ordered by slot.
  std::vector<v1::RankStatus> ranks;
};

struct RegistryCounts {
  int ready = 0;
  int lost = 0;
  // Slots of READY workers, in total and not holding a rank; GPU and CPU slots together.
  int total_slots = 0;
  int free_slots = 0;
  // The GPU slots among them (the rest are CPU slots).
  int total_gpu_slots = 0;
  int free_gpu_slots = 0;
};

class WorkerRegistry {
 public:
  // REQUIRES: `clock` outlives the registry; ValidateRegistryOptions(options) is OK (checked).
  explicit WorkerRegistry(const Clock* clock, RegistryOptions options = {});

  WorkerRegistry(const WorkerRegistry&) = delete;
  WorkerRegistry& operator=(const WorkerRegistry&) = delete;

  const RegistryOptions& options() const { return options_; }

  // Adds a worker, or replaces the record of a known worker_id (its agent restarted; the slot
  // count may change). The new record is READY with register_time = last_heartbeat_time = now and
  // lease_expire_time = now + lease. INVALID_ARGUMENT as ValidateRegisterRequest.
  absl::StatusOr<RegisterResult> Register(const v1::RegisterWorkerRequest& request);

  // Renews the lease of a READY worker (last_heartbeat_time = now, lease_expire_time = now +
  // lease) and records the states the worker reports for the ranks placed on it (reports with
  // state UNSPECIFIED and placed ranks the report leaves out keep their state). NOT_FOUND for an
  // unknown worker_id; FAILED_PRECONDITION for a LOST worker, which must Register again (its
  // ranks were handed out by ExpireLeases). Note that WorkerService.Heartbeat answers NOT_FOUND
  // on the wire in both cases.
  absl::StatusOr<HeartbeatResult> Heartbeat(const v1::HeartbeatRequest& request);

  // Moves every READY worker whose lease has lapsed (now >= lease_expire_time) to LOST, clears
  // its ranks and returns it with the ranks it held. Ordered by worker_id.
  std::vector<LostWorker> ExpireLeases();

  // The slots of every READY worker by kind, keyed by worker_id; a full worker has empty free
  // lists. LOST workers are absent. Input for Scheduler::Schedule.
  std::map<std::string, WorkerSlots> FreeSlots() const;

  // Places rank `rank` of (job_id, attempt) in `slot` of a READY worker, state STARTING.
  // NOT_FOUND unknown worker; FAILED_PRECONDITION LOST worker; OUT_OF_RANGE slot outside
  // [0, SlotCount); ALREADY_EXISTS when the slot is taken or the (job_id, attempt, rank) is
  // already placed on any worker. Nothing changes on error.
  absl::Status Assign(absl::string_view worker_id, int slot, absl::string_view job_id,
                      int32_t attempt, int32_t rank);

  // Frees every slot holding a rank of (job_id, attempt) on every worker and returns those ranks
  // ordered by rank (the caller sends STOPs). Releasing nothing is not an error.
  std::vector<PlacedRank> ReleaseJob(absl::string_view job_id, int32_t attempt);

  // Every rank of job_id placed now, any attempt, ordered by (attempt, rank).
  std::vector<PlacedRank> RanksOf(absl::string_view job_id) const;

  // Replaces the whole registry with records a previous coordinator persisted. Records are kept
  // as they were (state, ranks, times) except that every READY worker's lease is re-armed to
  // now + lease: the coordinator was down, so the workers could not heartbeat, and each gets a
  // full lease to reconnect instead of being declared LOST at once. LOST records stay LOST.
  // INVALID_ARGUMENT (registry unchanged) for records no registry could have produced: a bad or
  // duplicate worker_id, an unspecified state, a LOST worker holding ranks, a rank outside the
  // worker's slots, two ranks in one slot, one (job, attempt, rank) placed twice.
  absl::Status Restore(std::vector<v1::Worker> workers);

  // The record of worker_id, or nullptr. Valid until the next non-const call.
  const v1::Worker* Find(absl::string_view worker_id) const;

  // Every record, READY and LOST, ordered by worker_id.
  std::vector<v1::Worker> List() const;

  // For metrics (dstrain_workers{state=...}, slot gauges). The free slots of the READY workers in
  // `not_free` (draining: the scheduler places nothing there) count in the totals only.
  RegistryCounts Counts(const std::set<std::string>& not_free = {}) const;

 private:
  const Clock* const clock_;
  const RegistryOptions options_;
  // worker_id -> record; the record's ranks are kept ordered by slot.
  std::map<std::string, v1::Worker> workers_;
};

}  // namespace dstrain::coordinator
