// Coordinator: construction, restart recovery, the job-life transitions every service goes
// through (TransitionLocked, EndJobLocked, FailAttemptLocked, ScheduleLocked) and the helpers
// shared by the services. The services themselves are in coordinator_jobs.cc,
// coordinator_workers.cc and coordinator_catalog.cc.
#include "coordinator/server/coordinator.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc/proto_time.h"
#include "common/status/status_macros.h"
#include "coordinator/server/coordinator_internal.h"

namespace dstrain::coordinator {
namespace internal {

bool IsActive(v1::JobState s) { return s == v1::JOB_STATE_SCHEDULED || s == v1::JOB_STATE_RUNNING; }

bool HoldsARank(const v1::Job& job, absl::string_view worker) {
  if (worker.empty()) return false;
  for (const v1::RankAssignment& a : job.assignments()) {
    if (a.worker_id() == worker) return true;
  }
  return false;
}

absl::Status NoSuchJob(absl::string_view job_id) {
  return absl::NotFoundError(absl::StrCat("job_id: no job \"", job_id, "\""));
}

absl::Status StreamWithinMaximum(absl::Time now, absl::Time since, absl::Duration max) {
  if (now - since < max) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("the stream was open for its maximum of ",
                                             absl::FormatDuration(max),
                                             " (kMaxStreamSeconds): reconnect to go on"));
}

}  // namespace internal

namespace {

// The worker each rank of `job`'s current attempt runs on, by rank.
std::vector<std::string> RankWorkers(const v1::Job& job) {
  std::vector<std::string> out(std::max(0, job.world_size()));
  for (const v1::RankAssignment& a : job.assignments()) {
    if (a.rank() >= 0 && a.rank() < job.world_size()) out[a.rank()] = a.worker_id();
  }
  return out;
}

}  // namespace

const char* JobStateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_PENDING:
      return "PENDING";
    case v1::JOB_STATE_SCHEDULED:
      return "SCHEDULED";
    case v1::JOB_STATE_RUNNING:
      return "RUNNING";
    case v1::JOB_STATE_RESTARTING:
      return "RESTARTING";
    case v1::JOB_STATE_SUCCEEDED:
      return "SUCCEEDED";
    case v1::JOB_STATE_FAILED:
      return "FAILED";
    case v1::JOB_STATE_CANCELLED:
      return "CANCELLED";
    default:
      return "UNSPECIFIED";
  }
}

bool IsTerminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

Coordinator::Coordinator(CoordinatorState* state, const Clock* clock, CoordinatorOptions options)
    : state_(state),
      clock_(clock),
      options_(std::move(options)),
      registry_(clock, options_.registry),
      scheduler_(options_.scheduler) {}

Coordinator::~Coordinator() { Shutdown(); }

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorState* state,
                                                                 const Clock* clock,
                                                                 CoordinatorOptions options) {
  DT_RETURN_IF_ERROR(ValidateRegistryOptions(options.registry));
  std::unique_ptr<Coordinator> c(new Coordinator(state, clock, std::move(options)));
  DT_RETURN_IF_ERROR(c->Recover());
  return c;
}

absl::Status Coordinator::RecoverMetricsLocked(JobEntry& entry) {
  const v1::Job& job = entry.job;
  if (job.state() == v1::JOB_STATE_PENDING) {
    entry.queued_since = FromTimestamp(job.create_time());
  } else if (job.state() == v1::JOB_STATE_RESTARTING) {
    entry.queued_since = clock_->Now();  // when it re-entered the queue is not stored
  }
  DT_ASSIGN_OR_RETURN(std::vector<v1::Checkpoint> all, state_->ListCheckpoints(job.job_id()));
  for (const v1::Checkpoint& c : all) {
    if (c.state() != v1::CHECKPOINT_STATE_COMMITTED || c.step() < entry.last_checkpoint_step) {
      continue;
    }
    entry.last_checkpoint_step = c.step();
    entry.last_checkpoint_time = FromTimestamp(c.commit_time());
  }
  return absl::OkStatus();
}

absl::Status Coordinator::Recover() {
  absl::MutexLock lock(&mu_);
  DT_ASSIGN_OR_RETURN(std::vector<v1::Worker> workers, state_->ListWorkers());
  DT_RETURN_IF_ERROR(registry_.Restore(std::move(workers)));
  std::vector<v1::Job> jobs;
  DT_RETURN_IF_ERROR(state_->ListJobs([&jobs](const v1::Job& job) {
    jobs.push_back(job);
    return true;
  }));
  for (v1::Job& job : jobs) {
    next_submit_sequence_ = std::max(next_submit_sequence_, job.submit_sequence() + 1);
    DT_ASSIGN_OR_RETURN(std::optional<v1::StepMetrics> latest, state_->LatestMetrics(job.job_id()));
    if (latest) latest_[job.job_id()] = *latest;
    JobEntry& entry = jobs_[job.job_id()];
    entry.keep_last = KeepLastOf(job.spec_json());
    entry.checkpoint_every = CheckpointEveryOf(job.spec_json());
    entry.job = std::move(job);
    const v1::JobState s = entry.job.state();
    if (!IsTerminal(s)) DT_RETURN_IF_ERROR(RecoverMetricsLocked(entry));
    if (s == v1::JOB_STATE_PENDING || s == v1::JOB_STATE_RESTARTING) {
      DT_RETURN_IF_ERROR(EnqueueLocked(entry.job));
    } else if (internal::IsActive(s)) {
      // Trainers keep running while the coordinator is down; their next reports (and the
      // workers' heartbeats) bring the rank states back.
      entry.rank_workers[entry.job.attempt()] = RankWorkers(entry.job);
      entry.ranks.assign(entry.job.world_size(), s == v1::JOB_STATE_RUNNING
                                                     ? v1::RANK_STATE_RUNNING
                                                     : v1::RANK_STATE_STARTING);
    }
  }
  return ScheduleLocked();
}

void Coordinator::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  changed_.SignalAll();
}

CoordinatorStats Coordinator::Stats() {
  absl::MutexLock lock(&mu_);
  CoordinatorStats stats;
  for (const auto& [id, entry] : jobs_) ++stats.jobs_by_state[entry.job.state()];
  stats.queue_depth = static_cast<int>(scheduler_.size());
  // A draining worker takes no new ranks (ScheduleLocked leaves it out): its free slots are not
  // free for the queue.
  stats.workers = registry_.Counts(draining_);
  const absl::Time now = clock_->Now();
  for (const v1::Worker& w : registry_.List()) {
    if (w.state() != v1::WORKER_STATE_READY) continue;
    const double age = absl::ToDoubleSeconds(now - FromTimestamp(w.last_heartbeat_time()));
    stats.max_heartbeat_age_seconds = std::max(stats.max_heartbeat_age_seconds, age);
    stats.heartbeat_age_seconds[w.worker_id()] = age;
  }
  stats.lease_seconds = absl::ToDoubleSeconds(options_.registry.lease);
  for (const auto& [id, entry] : jobs_) {
    const v1::Job& job = entry.job;
    if (IsTerminal(job.state())) continue;
    JobGauges g;
    g.job_id = id;
    g.state = job.state();
    g.device = DeviceOf(job);
    g.world_size = job.world_size();
    const bool queued =
        job.state() == v1::JOB_STATE_PENDING || job.state() == v1::JOB_STATE_RESTARTING;
    if (queued && entry.queued_since != absl::InfinitePast()) {
      g.queued_seconds = std::max(0.0, absl::ToDoubleSeconds(now - entry.queued_since));
    }
    g.restarts = job.restarts();
    g.max_restarts = job.max_restarts();
    // The stored job's current_step is filled in only when the job is viewed: the latest
    // record holds it.
    if (const auto latest = latest_.find(id); latest != latest_.end()) {
      g.step = latest->second.step();
    }
    g.train_steps = job.train_steps();
    g.checkpoint_every = entry.checkpoint_every;
    g.last_checkpoint_step = entry.last_checkpoint_step;
    if (entry.last_checkpoint_time != absl::InfinitePast()) {
      g.last_checkpoint_unix_seconds =
          absl::ToDoubleSeconds(entry.last_checkpoint_time - absl::UnixEpoch());
    }
    stats.jobs.push_back(std::move(g));
  }
  return stats;
}

// ---- job life ----

absl::Status Coordinator::TransitionLocked(JobEntry& entry, v1::JobState to,
                                           const std::string& reason, const std::string& message,
                                           const std::vector<std::string>& workers) {
  v1::Job& job = entry.job;
  const absl::Time now = clock_->Now();
  v1::JobEvent event;
  event.set_from_state(job.state());
  event.set_to_state(to);
  event.set_reason(reason);
  event.set_message(message);
  *event.mutable_time() = ToTimestamp(now);
  job.set_state(to);
  job.set_state_reason(reason);
  job.set_state_message(message);
  if (to == v1::JOB_STATE_RUNNING && !job.has_start_time())
    *job.mutable_start_time() = event.time();
  if ((to == v1::JOB_STATE_PENDING || to == v1::JOB_STATE_RESTARTING) && event.from_state() != to) {
    entry.queued_since = now;
  }
  if (IsTerminal(to) || to == v1::JOB_STATE_RESTARTING) {
    if (IsTerminal(to)) *job.mutable_end_time() = event.time();
    job.clear_assignments();
    entry.ranks.clear();
  }
  std::vector<v1::Worker> records;
  for (const std::string& id : workers) {
    if (const v1::Worker* w = registry_.Find(id); w != nullptr) records.push_back(*w);
  }
  DT_RETURN_IF_ERROR(state_->PutJob(job, &event, records).status());
  BumpLocked(entry);
  return absl::OkStatus();
}

absl::Status Coordinator::EndJobLocked(JobEntry& entry, v1::JobState to, const std::string& reason,
                                       const std::string& message) {
  std::vector<PlacedRank> released = registry_.ReleaseJob(entry.job.job_id(), entry.job.attempt());
  std::vector<std::string> workers;
  for (const PlacedRank& placed : released) {
    workers.push_back(placed.worker_id);
    const v1::RankState s = placed.rank.state();
    if (s == v1::RANK_STATE_SUCCEEDED || s == v1::RANK_STATE_FAILED || s == v1::RANK_STATE_KILLED) {
      continue;  // already gone
    }
    if (to == v1::JOB_STATE_SUCCEEDED) continue;
    v1::Assignment stop;
    stop.set_kind(v1::ASSIGNMENT_KIND_STOP);
    stop.set_job_id(entry.job.job_id());
    stop.set_attempt(entry.job.attempt());
    stop.set_rank(placed.rank.rank());
    stop.set_slot(placed.rank.slot());
    stop.set_reason(reason);
    PushLocked(placed.worker_id, std::move(stop));
  }
  std::sort(workers.begin(), workers.end());
  workers.erase(std::unique(workers.begin(), workers.end()), workers.end());
  return TransitionLocked(entry, to, reason, message, workers);
}

absl::Status Coordinator::FailRanksLocked(const std::vector<v1::RankStatus>& ranks,
                                          const std::string& reason, const std::string& message) {
  for (const v1::RankStatus& rank : ranks) {
    auto it = jobs_.find(rank.job_id());
    if (it == jobs_.end()) continue;
    JobEntry& entry = it->second;
    if (entry.job.attempt() != rank.attempt() || !internal::IsActive(entry.job.state())) continue;
    // A worker that died or came back empty is the infrastructure's fault: always retryable.
    DT_RETURN_IF_ERROR(FailAttemptLocked(entry, reason,
                                         absl::StrCat(message, " (rank ", rank.rank(), ")"),
                                         /*retryable=*/true));
  }
  return absl::OkStatus();
}

absl::Status Coordinator::FailAttemptLocked(JobEntry& entry, const std::string& reason,
                                            const std::string& message, bool retryable,
                                            bool peer_lost) {
  v1::Job& job = entry.job;
  if (retryable && job.restarts() < job.max_restarts()) {
    // Every rank of the attempt stops; the job waits in the queue at its old place for a gang
    // of healthy workers, and its trainers resume from the latest committed checkpoint.
    job.set_restarts(job.restarts() + 1);
    DT_RETURN_IF_ERROR(EndJobLocked(
        entry, v1::JOB_STATE_RESTARTING, reason,
        absl::StrCat(message, "; restart ", job.restarts(), " of ", job.max_restarts())));
    const absl::Duration delay = options_.restart_delay.value_or(registry_.options().lease);
    if (peer_lost && delay > absl::ZeroDuration()) {
      delayed_.emplace(clock_->Now() + delay, job.job_id());
      return absl::OkStatus();
    }
    return EnqueueLocked(job);
  }
  std::string why = message;
  if (!retryable) {
    absl::StrAppend(&why, " (exit codes 1-127 are permanent: not restarted)");
  } else {
    absl::StrAppend(&why, " (no restarts left: job.max_restarts is ", job.max_restarts(), ")");
  }
  return EndJobLocked(entry, v1::JOB_STATE_FAILED,
                      retryable && job.max_restarts() > 0 ? "RestartsExhausted" : reason, why);
}

absl::Status Coordinator::EnqueueLocked(const v1::Job& job) {
  return scheduler_.Enqueue(job.job_id(), job.priority(), job.world_size(), job.submit_sequence(),
                            DeviceOf(job), std::max(1, job.pipeline_stages()));
}

absl::Status Coordinator::ScheduleLocked() {
  if (scheduler_.empty()) return absl::OkStatus();
  // Draining workers take nothing new, so they count neither as free nor as registered in the
  // queue reasons.
  std::map<std::string, WorkerSlots> cluster = registry_.FreeSlots();
  for (const std::string& id : draining_) cluster.erase(id);
  std::vector<Placement> placements = scheduler_.Schedule(cluster);
  for (Placement& placement : placements) {
    JobEntry& entry = jobs_[placement.job_id];
    v1::Job& job = entry.job;
    job.set_attempt(job.attempt() + 1);
    job.clear_assignments();
    std::vector<std::string> workers;
    for (const v1::RankAssignment& r : placement.ranks) {
      DT_RETURN_IF_ERROR(
          registry_.Assign(r.worker_id(), r.slot(), job.job_id(), job.attempt(), r.rank()));
      *job.add_assignments() = r;
      workers.push_back(r.worker_id());
    }
    entry.ranks.assign(job.world_size(), v1::RANK_STATE_STARTING);
    entry.rank_workers[job.attempt()] = RankWorkers(job);
    std::sort(workers.begin(), workers.end());
    workers.erase(std::unique(workers.begin(), workers.end()), workers.end());
    const bool gpu = placement.ranks.front().slot_kind() == v1::SLOT_KIND_GPU;
    DT_RETURN_IF_ERROR(TransitionLocked(
        entry, v1::JOB_STATE_SCHEDULED, "GangScheduled",
        absl::StrCat("attempt ", job.attempt(), ": ", job.world_size(), " rank(s) on ",
                     gpu ? "GPU" : "CPU", " slots of ", absl::StrJoin(workers, ", ")),
        workers));
    for (const v1::RankAssignment& r : placement.ranks) {
      PushLocked(r.worker_id(), StartFor(entry, r));
    }
  }
  return absl::OkStatus();
}

v1::Job Coordinator::ViewLocked(const JobEntry& entry) {
  v1::Job view = entry.job;
  view.set_queue_reason(scheduler_.QueueReason(entry.job.job_id()));
  if (auto it = latest_.find(entry.job.job_id()); it != latest_.end()) {
    *view.mutable_latest_metrics() = it->second;
    view.set_current_step(it->second.step());
  }
  return view;
}

void Coordinator::BumpLocked(JobEntry& entry) {
  ++entry.version;
  changed_.SignalAll();
}

}  // namespace dstrain::coordinator
