// Coordinator: the control plane's logic behind the gRPC services (docs/service.md,
// docs/wire-api.md), apart from the wire so tests drive it directly with a fake clock.
//
// It owns the job table and the life of each job, places gangs through the Scheduler on the
// WorkerRegistry's free slots, hands assignments to the workers' streams, and writes every state
// transition through CoordinatorState before it answers, so a restarted coordinator (Create on
// the same state) loses no job, worker record, catalog entry or metric.
//
// Job life (Kubeflow-style conditions, each transition an event with a reason):
//   PENDING ─(gang placed)→ SCHEDULED ─(every rank running)→ RUNNING ─(every rank exited 0)→
//   SUCCEEDED; CancelJob → CANCELLED (its ranks are stopped and its slots freed at once).
// A failed attempt — a rank exiting non-zero or killed, a worker lost (lease lapsed) or
// restarted under it — stops every rank of the attempt; when the failure is retryable (a signal,
// an exit code 128-255, a lost worker; Kubeflow's ExitCode policy) and job.max_restarts allows,
// the job goes RESTARTING and back into the queue at its old place, is gang-scheduled again on
// healthy workers (never on draining ones) as the next attempt, and its trainers resume from the
// latest committed checkpoint; otherwise it is FAILED with the reason.
// Reports about an attempt that is no longer current are acknowledged and ignored.
//
// Thread-safe: one mutex over the job table, registry, scheduler and the worker outboxes;
// streaming calls wait on it and return when their job ends, their client goes away, a newer
// stream replaces them, or Shutdown().
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock/clock.h"
#include "common/limits/limits.h"
#include "coordinator/auth/caller.h"
#include "coordinator/registry/worker_registry.h"
#include "coordinator/scheduler/scheduler.h"
#include "coordinator/server/job_validation.h"
#include "coordinator/server/rate_bucket.h"
#include "coordinator/state/state.h"
#include "coordinator/store/store_credentials.h"
#include "proto/checkpoint.pb.h"
#include "proto/job.pb.h"
#include "proto/worker.pb.h"

namespace dstrain::coordinator {

struct CoordinatorOptions {
  RegistryOptions registry;
  SchedulerOptions scheduler;
  SubmissionLimits limits;
  // After a trainer's "lost a peer" exit (which usually arrives before a dead worker's lease
  // lapses) a restarting job waits this long before it may be placed again, so the dead worker
  // is declared lost first and the new attempt lands on healthy workers. Default: the lease.
  std::optional<absl::Duration> restart_delay;
  // How long streaming calls sleep between checks of their client and of shutdown.
  absl::Duration stream_poll = absl::Milliseconds(200);
  // A streaming call ends after this long, so no call holds a server thread without bound:
  // WatchJob and GetJobLogs with UNAVAILABLE, StreamAssignments with OK. Clients reconnect and
  // resume where they were.
  absl::Duration max_stream = absl::Seconds(limits::kMaxStreamSeconds);
  // A job's ranks together may add this many output lines per second to its log, in bursts of up
  // to log_burst_lines; the lines beyond are dropped and one line says how many (ReportStatus).
  double log_lines_per_second = limits::kLogLinesPerSecond;
  double log_burst_lines = limits::kLogBurstLines;
  // A job that ended (SUCCEEDED, FAILED, CANCELLED) this long ago is deleted with its events,
  // metrics, logs and catalog records (ExpireJobs). Zero: jobs are kept for good.
  absl::Duration job_ttl = absl::ZeroDuration();
  // Each principal may create this many jobs per minute, in bursts of up to submission_burst
  // (SubmitJob; an idempotent resubmission is free). Without authentication all callers share
  // one allowance.
  double submissions_per_minute = limits::kSubmissionsPerMinute;
  double submission_burst = limits::kSubmissionBurst;
  // Issues the store token of every START assignment (not owned). Null: assignments carry none
  // (tests without a StoreService).
  const StoreCredentials* store_credentials = nullptr;
  // Issues and checks the workers' session tokens (RegisterWorkerResponse.session_token; not
  // owned). Null: none issued, none checked (tests that drive the WorkerService by hand).
  const StoreCredentials* worker_sessions = nullptr;
};

// A snapshot for /metrics.
// One job that has not ended, as the metrics show it (docs/service.md, "Metrics and health").
struct JobGauges {
  std::string job_id;
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  v1::JobDevice device = v1::JOB_DEVICE_UNSPECIFIED;
  int world_size = 0;
  // Seconds since it last entered the queue (submitted, or back after a failure) while it waits
  // there (PENDING or RESTARTING); 0 once placed. A coordinator restart starts the count again
  // for jobs back in the queue after a failure (a submitted one counts from its create time).
  double queued_seconds = 0;
  int restarts = 0;
  int max_restarts = 0;
  int64_t step = 0;
  int64_t train_steps = 0;
  int64_t checkpoint_every = 0;      // job.checkpoint_every; 0: no periodic checkpoints
  int64_t last_checkpoint_step = 0;  // of the newest committed checkpoint; 0 before one
  // When that checkpoint was committed (Unix seconds); unset before one.
  std::optional<double> last_checkpoint_unix_seconds;
};

struct CoordinatorStats {
  std::map<v1::JobState, int> jobs_by_state;
  int queue_depth = 0;
  // READY workers' slots; a draining worker's free slots are not counted free.
  RegistryCounts workers;
  // Seconds since the oldest READY worker's last heartbeat (0 without workers).
  double max_heartbeat_age_seconds = 0;
  // Every READY worker's seconds since its last heartbeat, by worker id.
  std::map<std::string, double> heartbeat_age_seconds;
  // The lease after which a silent worker is declared LOST.
  double lease_seconds = 0;
  // Jobs that have not ended, by job id.
  std::vector<JobGauges> jobs;
};

class Coordinator {
 public:
  // Rebuilds the coordinator from `state` (empty on first start): jobs, their queue order,
  // workers (each READY one gets a full lease to reconnect) and placements. `state` and `clock`
  // must outlive it.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(CoordinatorState* state,
                                                             const Clock* clock,
                                                             CoordinatorOptions options);
  ~Coordinator();

  // JobService.
  // `caller`: who asks (coordinator/auth/caller.h). A submitter sees, cancels and deletes only
  // its own jobs (PERMISSION_DENIED otherwise, and ListJobs leaves the others out); SubmitJob
  // records it as the job's owner and in the event, and counts it against its submission rate
  // (RESOURCE_EXHAUSTED beyond CoordinatorOptions::submissions_per_minute).
  absl::StatusOr<v1::SubmitJobResponse> SubmitJob(const v1::SubmitJobRequest& request,
                                                  const Caller& caller = Caller::Trusted());
  absl::StatusOr<v1::GetJobResponse> GetJob(const v1::GetJobRequest& request,
                                            const Caller& caller = Caller::Trusted());
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request,
                                                const Caller& caller = Caller::Trusted());
  absl::StatusOr<v1::CancelJobResponse> CancelJob(const v1::CancelJobRequest& request,
                                                  const Caller& caller = Caller::Trusted());
  // An ended job, with everything stored about it (FAILED_PRECONDITION while it is live).
  absl::Status DeleteJob(const v1::DeleteJobRequest& request,
                         const Caller& caller = Caller::Trusted());
  // Streams: `send` returns false when the client is gone; `cancelled` is polled.
  using WatchSend = std::function<bool(const v1::WatchJobResponse&)>;
  using LogSend = std::function<bool(const v1::GetJobLogsResponse&)>;
  using Cancelled = std::function<bool()>;
  absl::Status WatchJob(const v1::WatchJobRequest& request, const WatchSend& send,
                        const Cancelled& cancelled, const Caller& caller = Caller::Trusted());
  absl::Status GetJobLogs(const v1::GetJobLogsRequest& request, const LogSend& send,
                          const Cancelled& cancelled, const Caller& caller = Caller::Trusted());

  // WorkerService. `caller` must be the worker the request names (its certificate;
  // PERMISSION_DENIED otherwise).
  absl::StatusOr<v1::RegisterWorkerResponse> RegisterWorker(
      const v1::RegisterWorkerRequest& request, const Caller& caller = Caller::Trusted());
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request,
                                                  const Caller& caller = Caller::Trusted());
  using AssignmentSend = std::function<bool(const v1::StreamAssignmentsResponse&)>;
  absl::Status StreamAssignments(const v1::StreamAssignmentsRequest& request,
                                 const AssignmentSend& send, const Cancelled& cancelled,
                                 const Caller& caller = Caller::Trusted());
  absl::Status ReportStatus(const v1::ReportStatusRequest& request,
                            const Caller& caller = Caller::Trusted());
  v1::ListWorkersResponse ListWorkers();
  // StoreService's binding of an attempt's rendezvous keys to its ranks' workers: OK when
  // `caller` is a worker that holds a rank of the attempt whose prefix `scope` is
  // (StoreCredentials::ScopeOf) and that attempt is the job's current one, or is trusted;
  // PERMISSION_DENIED otherwise (another worker's job, an ended attempt, not a scope).
  absl::Status MayUseStoreScope(const Caller& caller, absl::string_view scope);

  // CheckpointService. A trainer writes only its own job's catalog: `caller`'s certificate must
  // name a worker that holds a rank of the job's current attempt (PERMISSION_DENIED otherwise;
  // the job's leading trainer registers every rank's shard).
  absl::Status RegisterShard(const v1::RegisterShardRequest& request,
                             const Caller& caller = Caller::Trusted());
  absl::StatusOr<v1::CommitCheckpointResponse> CommitCheckpoint(
      const v1::CommitCheckpointRequest& request, const Caller& caller = Caller::Trusted());
  // A submitter lists only its own jobs' checkpoints, a worker those of a job it holds a rank of.
  absl::StatusOr<v1::ListCheckpointsResponse> ListCheckpoints(
      const v1::ListCheckpointsRequest& request, const Caller& caller = Caller::Trusted());

  // Declares workers whose lease lapsed LOST and fails their jobs, and queues restarting jobs
  // whose delay passed; call periodically (the server does, every heartbeat interval / 2).
  absl::Status ExpireLeases();
  // Deletes the jobs that ended more than options.job_ttl ago (nothing when it is zero), then
  // gives their space back; returns how many went. Call periodically (the server does, with
  // ExpireLeases).
  absl::StatusOr<int> ExpireJobs();

  // Wakes every streaming call; they return kUnavailable. Idempotent.
  void Shutdown();

  CoordinatorStats Stats();

 private:
  struct JobEntry {
    v1::Job job;                       // as persisted
    std::vector<v1::RankState> ranks;  // the current attempt's ranks, by rank
    int64_t version = 0;               // bumped on every change a watcher may want
    int keep_last = 0;                 // job.keep_last: committed checkpoints the catalog keeps
    int64_t checkpoint_every = 0;      // job.checkpoint_every (for the metrics)
    // When the job last entered the queue (for the metrics; see JobGauges::queued_seconds).
    absl::Time queued_since = absl::InfinitePast();
    // The newest committed checkpoint's step and commit time (0 and InfinitePast before one).
    int64_t last_checkpoint_step = 0;
    absl::Time last_checkpoint_time = absl::InfinitePast();
    // The worker that holds each rank, per attempt placed in this coordinator's life (and the
    // active attempt's, recovered from the stored assignments): only that worker may report
    // about the rank (ReportStatus).
    std::map<int32_t, std::vector<std::string>> rank_workers;
    // The job's log rate (CoordinatorOptions::log_lines_per_second): lines it may still append
    // now, and when that was counted.
    RateBucket log_allowance;
  };
  struct Outbox {
    std::deque<v1::Assignment> queue;
    int64_t generation = 0;  // a new stream for the worker replaces the previous one
  };

  Coordinator(CoordinatorState* state, const Clock* clock, CoordinatorOptions options);
  absl::Status Recover();
  // The metrics' view of a recovered job that has not ended: when it entered the queue, its
  // newest committed checkpoint.
  absl::Status RecoverMetricsLocked(JobEntry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Moves the job to `to` with an event, persisting both (and the registry's records of
  // `workers`, in the same synced write), and wakes watchers.
  absl::Status TransitionLocked(JobEntry& entry, v1::JobState to, const std::string& reason,
                                const std::string& message,
                                const std::vector<std::string>& workers = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a live job: frees its slots, stops its ranks, records the final state.
  absl::Status EndJobLocked(JobEntry& entry, v1::JobState to, const std::string& reason,
                            const std::string& message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Places what fits and starts it.
  absl::Status ScheduleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // How many of `lines` output lines the job may append now (its log rate), taken from its
  // allowance.
  int TakeLogAllowanceLocked(JobEntry& entry, int lines) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job's version, or -1 when there is no such job (any more).
  int64_t VersionLocked(const std::string& job_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = jobs_.find(job_id);
    return it == jobs_.end() ? -1 : it->second.version;
  }
  // PERMISSION_DENIED unless `token` is the session token of worker_id's current registration
  // (OK when no worker_sessions are configured, or the worker is unknown: the caller answers
  // that).
  absl::Status CheckSessionLocked(const std::string& worker_id, const std::string& token) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts a job (PENDING or RESTARTING) into the scheduler's queue at its place.
  absl::Status EnqueueLocked(const v1::Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The attempt failed: RESTARTING (and queued again) when `retryable` and restarts are left,
  // else FAILED. Either way its ranks are stopped and its slots freed. `peer_lost`: a trainer
  // lost a peer it cannot name, whose worker may be dead but not yet declared lost: the job
  // waits restart_delay before it is placed again.
  absl::Status FailAttemptLocked(JobEntry& entry, const std::string& reason,
                                 const std::string& message, bool retryable, bool peer_lost = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails the attempts of ranks that died with a worker (lost or re-registered).
  absl::Status FailRanksLocked(const std::vector<v1::RankStatus>& ranks, const std::string& reason,
                               const std::string& message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PushLocked(const std::string& worker_id, v1::Assignment assignment)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Assignment StartFor(const JobEntry& entry, const v1::RankAssignment& rank) const;
  // The job as clients see it: the record plus its latest metrics and, while queued, its queue
  // reason.
  v1::Job ViewLocked(const JobEntry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void BumpLocked(JobEntry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deletes an ended job from the service and the database (DeleteJob, ExpireJobs); the caller
  // compacts.
  absl::Status DeleteJobLocked(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  CoordinatorState* const state_;
  const Clock* const clock_;
  const CoordinatorOptions options_;

  absl::Mutex mu_;
  absl::CondVar changed_;  // signalled (all) on every job, outbox or shutdown change
  std::map<std::string, JobEntry> jobs_ ABSL_GUARDED_BY(mu_);
  // The latest metrics per job, kept here so GetJob and ListJobs do not read them back.
  std::map<std::string, v1::StepMetrics> latest_ ABSL_GUARDED_BY(mu_);
  WorkerRegistry registry_ ABSL_GUARDED_BY(mu_);
  Scheduler scheduler_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Outbox> outboxes_ ABSL_GUARDED_BY(mu_);
  // Restarting jobs not yet back in the queue, with when they may be: (due, job_id).
  std::set<std::pair<absl::Time, std::string>> delayed_ ABSL_GUARDED_BY(mu_);
  // Workers whose agent is shutting down (HeartbeatRequest.draining): given no new ranks.
  std::set<std::string> draining_ ABSL_GUARDED_BY(mu_);
  uint64_t next_submit_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  // Submissions per principal ("" without authentication).
  std::map<std::string, RateBucket> submissions_ ABSL_GUARDED_BY(mu_);
};

const char* JobStateName(v1::JobState state);  // "PENDING", ...
bool IsTerminal(v1::JobState state);

}  // namespace dstrain::coordinator
