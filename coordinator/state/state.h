// CoordinatorState: the coordinator's persistent state as typed records over a KvDb
// (docs/service.md, "State in RocksDB"): jobs and their event history, workers, the checkpoint
// catalog, step metrics, trainer logs and the rendezvous key-value space. A restarted coordinator
// rebuilds its memory from here.
//
// Records are serialized v1 protos under the keys of state_keys.h (NOTE [Key schema]).
// Durability follows RocksDB's WriteOptions::sync: state transitions (jobs, events, workers,
// checkpoint records, rendezvous keys, deletions) are written kSync; metrics and logs kBuffered,
// so a power loss may drop their last few entries but a coordinator crash loses nothing.
//
// Errors: kInvalidArgument for a malformed job id (state_keys::ValidateJobId) or a negative
// number where the schema needs a non-negative one; kDataLoss naming the table and key when a
// stored record does not parse; otherwise the KvDb's error.
//
// Thread-safe. The read-modify-write operations (PutJob with an event, checkpoint updates,
// AppendLogs, DeleteJobData) are serialized by one mutex, so this object must be the only writer
// of its tables.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/limits/limits.h"
#include "coordinator/state/kv_db.h"
#include "proto/checkpoint.pb.h"
#include "proto/common.pb.h"
#include "proto/job.pb.h"
#include "proto/worker.pb.h"

namespace dstrain::coordinator {

struct CoordinatorStateOptions {
  // AppendLogs keeps at most this many of a job's newest lines, so one chatty job cannot fill
  // the disk. Values below 1 count as 1.
  int64_t max_log_lines_per_job = limits::kLogLinesKeptPerJob;
  // A longer line's text is cut to this many bytes (at a UTF-8 character boundary) and marked, so
  // the retained log of a job stays within max_log_lines_per_job times this.
  int64_t max_log_line_bytes = static_cast<int64_t>(limits::kMaxLogLineBytes);
};

class CoordinatorState {
 public:
  using JobFn = std::function<bool(const v1::Job&)>;

  // `db` is not owned and must outlive this object.
  explicit CoordinatorState(KvDb* db, CoordinatorStateOptions options = {});
  CoordinatorState(const CoordinatorState&) = delete;
  CoordinatorState& operator=(const CoordinatorState&) = delete;

  // --- Jobs -------------------------------------------------------------------------------------

  // Stores `job` (replacing the record with its job_id) and, when `event` is not null, appends a
  // copy of it to the job's history, both in one synced batch: a job's state and the event that
  // explains it are never out of step. The copy gets the next sequence of the job (dense, from 1)
  // and job.job_id; event->sequence is ignored, event->job_id must be empty or job.job_id.
  // Returns the sequence given to the event, or 0 without one.
  absl::StatusOr<int64_t> PutJob(const v1::Job& job, const v1::JobEvent* event);
  // The same, with the records of `workers` in the same batch (a placement or a release changes
  // the job and its workers together: one synced write, never one without the other).
  absl::StatusOr<int64_t> PutJob(const v1::Job& job, const v1::JobEvent* event,
                                 const std::vector<v1::Worker>& workers);

  // The job, or nullopt when there is none with that id.
  absl::StatusOr<std::optional<v1::Job>> GetJob(absl::string_view job_id);

  // Calls `fn` for every job in job-id order until it returns false.
  absl::Status ListJobs(const JobFn& fn);

  // Up to `limit` (> 0) jobs with job_id > `start_after_id` ("" = from the first) for which
  // `filter` returns true (a null filter takes all), in job-id order. A page shorter than `limit`
  // is the last; otherwise the next page starts after the last job_id returned.
  absl::StatusOr<std::vector<v1::Job>> ListJobsPage(absl::string_view start_after_id, int limit,
                                                    const JobFn& filter = nullptr);

  // The job's events with sequence >= from_sequence, ascending.
  absl::StatusOr<std::vector<v1::JobEvent>> ListEvents(absl::string_view job_id,
                                                       int64_t from_sequence);

  // --- Workers ----------------------------------------------------------------------------------

  // Stores the worker record (synced), replacing the one with its worker_id (non-empty).
  absl::Status PutWorker(const v1::Worker& worker);
  absl::StatusOr<std::optional<v1::Worker>> GetWorker(absl::string_view worker_id);
  // Every worker, in worker-id order.
  absl::StatusOr<std::vector<v1::Worker>> ListWorkers();

  // --- Checkpoint catalog -----------------------------------------------------------------------

  // Records one rank's durable shard of checkpoint (job_id, tag), synced. The first shard creates
  // the checkpoint as PENDING at `step`; a rank registering again replaces its shard (a retried
  // write). Shards stay ordered by rank and total_bytes is their sum. kFailedPrecondition when
  // the checkpoint is already COMMITTED or was created with another step; kInvalidArgument for an
  // empty tag, a negative step or rank.
  absl::Status RegisterShard(absl::string_view job_id, absl::string_view tag, int64_t step,
                             const v1::ShardInfo& shard);

  // Marks checkpoint (job_id, tag) COMMITTED with `path` (its directory, holding the manifest)
  // and `commit_time`, synced, and returns it. Whether every rank has a shard is the caller's
  // check (it knows the world size). kNotFound when no shard was registered; kFailedPrecondition
  // when `step` differs from the registered one, or when it is already COMMITTED with another
  // path. Committing again with the same path returns the record unchanged (a retry).
  absl::StatusOr<v1::Checkpoint> CommitCheckpoint(absl::string_view job_id, absl::string_view tag,
                                                  int64_t step, absl::string_view path,
                                                  absl::Time commit_time);

  // The job's checkpoints, PENDING ones included, ascending by step (then tag).
  absl::StatusOr<std::vector<v1::Checkpoint>> ListCheckpoints(absl::string_view job_id);

  // The COMMITTED checkpoint with the highest step, or nullopt when there is none: where a
  // restarted job resumes.
  absl::StatusOr<std::optional<v1::Checkpoint>> LatestCommitted(absl::string_view job_id);

  // --- Metrics ----------------------------------------------------------------------------------

  // Stores one step's metrics under (metrics.attempt, metrics.step), kBuffered. A step run again
  // by a later attempt is kept beside the earlier one; the same (attempt, step) again replaces
  // it. kInvalidArgument for a negative attempt or step.
  absl::Status AppendMetrics(absl::string_view job_id, const v1::StepMetrics& metrics);

  // The job's metrics with step >= from_step, ordered by attempt then step. With limit_last > 0
  // only the last limit_last of those (still in that order); 0 returns all.
  absl::StatusOr<std::vector<v1::StepMetrics>> ListMetrics(absl::string_view job_id,
                                                           int64_t from_step, int limit_last);

  // Where a page of ListMetricsPage ended: the (attempt, step) of its last record; {0, 0} before
  // the first page.
  struct MetricsCursor {
    uint32_t attempt = 0;
    uint64_t step = 0;
  };
  // ListMetrics(job_id, from_step, 0) a page at a time: at most `limit` records (0: all) after
  // `after`, so a reader of a long job holds one page, not its whole history.
  absl::StatusOr<std::vector<v1::StepMetrics>> ListMetricsPage(absl::string_view job_id,
                                                               int64_t from_step,
                                                               MetricsCursor after, int limit);

  // The job's last metrics in (attempt, step) order, or nullopt when there are none.
  absl::StatusOr<std::optional<v1::StepMetrics>> LatestMetrics(absl::string_view job_id);

  // --- Logs -------------------------------------------------------------------------------------

  // Appends `lines` to the job's log, kBuffered, giving them the next sequences of the job (dense
  // and increasing from 1, continuing after a reopen; incoming sequences are ignored), and drops
  // the oldest lines beyond max_log_lines_per_job in the same batch; texts over max_log_line_bytes
  // are cut. Returns the lines with their sequences (and cut texts). Texts must be valid UTF-8 (a
  // proto3 string rule: such a line would not parse back).
  absl::StatusOr<std::vector<v1::LogLine>> AppendLogs(absl::string_view job_id,
                                                      std::vector<v1::LogLine> lines);

  // Stored lines of the job in ascending sequence, only those of `rank` when set, at most `limit`
  // of them (<= 0: no limit). Where they start (as GetJobLogsRequest):
  //   from_sequence > 0:               at from_sequence (tail_lines is ignored);
  //   otherwise tail_lines > 0:        at the first of the last tail_lines matching lines;
  //   otherwise:                       at the oldest line kept.
  // A follower asks again with from_sequence = last sequence returned + 1.
  absl::StatusOr<std::vector<v1::LogLine>> ListLogs(absl::string_view job_id, int64_t from_sequence,
                                                    std::optional<int32_t> rank, int tail_lines,
                                                    int limit);

  // --- Rendezvous key-value space (table kv; StoreService builds its semantics on these) -------

  absl::StatusOr<std::optional<std::string>> KvGet(absl::string_view key);
  // Synced, so a rendezvous survives a coordinator restart.
  absl::Status KvPut(absl::string_view key, absl::string_view value);
  // Synced; deleting a missing key succeeds.
  absl::Status KvDelete(absl::string_view key);
  // Calls `fn` for the keys starting with `prefix`, in key order, until it returns false.
  absl::Status KvScanPrefix(absl::string_view prefix, const KvDb::ScanFn& fn);

  // --- Secrets (table secrets: served by no RPC) ------------------------------------------

  // The secret called `name`: on first use `bytes` random bytes (from the OS's CSPRNG), stored
  // synced, so the same secret comes back after a restart. kInternal when no randomness.
  absl::StatusOr<std::string> Secret(absl::string_view name, size_t bytes);

  // --- Retention --------------------------------------------------------------------------------

  // Removes one checkpoint record (synced); a missing one is not an error. The files are the
  // trainer's (its retention removed them already).
  absl::Status DeleteCheckpoint(absl::string_view job_id, absl::string_view tag);

  // Removes the job itself with everything DeleteJobData removes, in one synced batch. A missing
  // job is not an error. The space comes back with Compact().
  absl::Status DeleteJob(absl::string_view job_id);
  // Gives the space of deleted records back to the file system (KvDb::Compact); after deleting
  // jobs, once.
  absl::Status Compact() { return db_->Compact(); }

  // Removes the job's events, checkpoint records, metrics and logs in one synced batch; the job
  // record itself stays (PutJob events then restart at sequence 1). Checkpoint files on disk are
  // the caller's.
  absl::Status DeleteJobData(absl::string_view job_id);

 private:
  // The job's highest event or log sequence stored in `table`, 0 when none.
  absl::StatusOr<int64_t> LastSequence(Table table, absl::string_view job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<v1::Checkpoint>> GetCheckpoint(absl::string_view job_id,
                                                              absl::string_view tag);

  KvDb* const db_;
  const int64_t max_log_lines_per_job_;
  const int64_t max_log_line_bytes_;
  absl::Mutex mu_;
};

}  // namespace dstrain::coordinator
