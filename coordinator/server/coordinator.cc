#include "coordinator/server/coordinator.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/grpc/proto_time.h"
#include "common/runtime/exit_codes.h"
#include "common/status/status_macros.h"

namespace dstrain::coordinator {
namespace {

// Most jobs one ListJobs page returns.
constexpr int kMaxPageSize = 1000;
// Most log lines one GetJobLogs message carries.
constexpr int kLogBatch = 500;

// An attempt placed on workers: its ranks' reports count.
bool IsActive(v1::JobState s) { return s == v1::JOB_STATE_SCHEDULED || s == v1::JOB_STATE_RUNNING; }

// Kubeflow's ExitCode policy: 1-127 are the program's own verdict (a bug, bad input: running it
// again gives the same), 128-255 are signals and infrastructure (and the trainer's own
// "lost a peer" and "drained" codes), worth another attempt.
bool Retryable(const v1::ReportStatusRequest& r) {
  if (r.state() == v1::RANK_STATE_KILLED || r.signal() != 0) return true;
  return r.exit_code() >= 128 && r.exit_code() <= 255;
}

// "rank 1 on worker w2 exited with status 200: <its last output line, usually the error>", then
// the agent's whole message (the last lines of output) for context.
std::string RankFailure(const v1::ReportStatusRequest& r) {
  std::string how = r.signal() != 0 ? absl::StrCat("killed by signal ", r.signal())
                                    : absl::StrCat("exited with status ", r.exit_code());
  std::string out = absl::StrCat("rank ", r.rank(), " on worker ", r.worker_id(), " ", how);
  std::vector<absl::string_view> lines = absl::StrSplit(r.message(), '\n', absl::SkipWhitespace());
  if (lines.size() > 1) absl::StrAppend(&out, ": ", lines.back());
  if (!r.message().empty()) absl::StrAppend(&out, "\n", r.message());
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
    entry.job = std::move(job);
    const v1::JobState s = entry.job.state();
    if (s == v1::JOB_STATE_PENDING || s == v1::JOB_STATE_RESTARTING) {
      DT_RETURN_IF_ERROR(scheduler_.Enqueue(entry.job.job_id(), entry.job.priority(),
                                            entry.job.world_size(), entry.job.submit_sequence()));
    } else if (IsActive(s)) {
      // Trainers keep running while the coordinator is down; their next reports (and the
      // workers' heartbeats) bring the rank states back.
      entry.ranks.assign(entry.job.world_size(), s == v1::JOB_STATE_RUNNING
                                                     ? v1::RANK_STATE_RUNNING
                                                     : v1::RANK_STATE_STARTING);
    }
  }
  return ScheduleLocked();
}

// ---- jobs ----

absl::StatusOr<v1::SubmitJobResponse> Coordinator::SubmitJob(const v1::SubmitJobRequest& request) {
  DT_ASSIGN_OR_RETURN(ValidatedJob valid, ValidateSubmission(request, options_.limits));
  absl::MutexLock lock(&mu_);
  v1::SubmitJobResponse response;
  if (auto it = jobs_.find(valid.job_id); it != jobs_.end()) {
    // Idempotent on the id: the same job again is the job that exists.
    if (it->second.job.spec_json() != valid.spec_json ||
        it->second.job.priority() != request.priority()) {
      return absl::AlreadyExistsError(
          absl::StrCat("job_id: \"", valid.job_id, "\" exists with another spec or priority"));
    }
    *response.mutable_job() = ViewLocked(it->second);
    response.set_created(false);
    return response;
  }
  JobEntry entry;
  entry.keep_last = valid.keep_last;
  v1::Job& job = entry.job;
  job.set_job_id(valid.job_id);
  job.set_name(valid.name);
  job.set_spec_json(valid.spec_json);
  job.set_world_size(valid.world_size);
  job.set_priority(request.priority());
  job.set_state(v1::JOB_STATE_PENDING);
  job.set_state_reason("Submitted");
  *job.mutable_create_time() = ToTimestamp(clock_->Now());
  job.set_max_restarts(valid.max_restarts);
  job.set_train_steps(valid.train_steps);
  job.set_submit_sequence(next_submit_sequence_);
  v1::JobEvent event;
  event.set_to_state(v1::JOB_STATE_PENDING);
  event.set_reason("Submitted");
  event.set_message(
      absl::StrCat("world size ", valid.world_size, ", priority ", request.priority()));
  *event.mutable_time() = job.create_time();
  // Stored before anything else sees it: an answer means the job survives a restart.
  DT_RETURN_IF_ERROR(state_->PutJob(job, &event).status());
  ++next_submit_sequence_;
  DT_RETURN_IF_ERROR(
      scheduler_.Enqueue(job.job_id(), job.priority(), job.world_size(), job.submit_sequence()));
  auto [it, inserted] = jobs_.emplace(valid.job_id, std::move(entry));
  BumpLocked(it->second);
  DT_RETURN_IF_ERROR(ScheduleLocked());
  *response.mutable_job() = ViewLocked(it->second);
  response.set_created(true);
  return response;
}

absl::StatusOr<v1::GetJobResponse> Coordinator::GetJob(const v1::GetJobRequest& request) {
  v1::GetJobResponse response;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(request.job_id());
    if (it == jobs_.end()) {
      return absl::NotFoundError(absl::StrCat("job_id: no job \"", request.job_id(), "\""));
    }
    *response.mutable_job() = ViewLocked(it->second);
  }
  DT_ASSIGN_OR_RETURN(std::vector<v1::JobEvent> events, state_->ListEvents(request.job_id(), 1));
  for (v1::JobEvent& e : events) *response.add_events() = std::move(e);
  const int limit = request.metrics_limit() > 0 ? request.metrics_limit() : 1;
  DT_ASSIGN_OR_RETURN(std::vector<v1::StepMetrics> metrics,
                      state_->ListMetrics(request.job_id(), 0, limit));
  for (v1::StepMetrics& m : metrics) *response.add_metrics() = std::move(m);
  return response;
}

absl::StatusOr<v1::ListJobsResponse> Coordinator::ListJobs(const v1::ListJobsRequest& request) {
  if (request.page_size() < 0) return absl::InvalidArgumentError("page_size: negative");
  const int limit = request.page_size() == 0 ? 100 : std::min(request.page_size(), kMaxPageSize);
  absl::MutexLock lock(&mu_);
  v1::ListJobsResponse response;
  // Pages in job-id order; the token is the last id of the previous page.
  for (auto it = jobs_.upper_bound(request.page_token()); it != jobs_.end(); ++it) {
    const v1::Job& job = it->second.job;
    if (request.states_size() > 0 && std::find(request.states().begin(), request.states().end(),
                                               job.state()) == request.states().end()) {
      continue;
    }
    if (!request.name_contains().empty() &&
        job.name().find(request.name_contains()) == std::string::npos) {
      continue;
    }
    if (response.jobs_size() == limit) {
      response.set_next_page_token(response.jobs(limit - 1).job_id());
      break;
    }
    v1::Job view = ViewLocked(it->second);
    view.clear_spec_json();  // listings stay small
    *response.add_jobs() = std::move(view);
  }
  return response;
}

absl::StatusOr<v1::CancelJobResponse> Coordinator::CancelJob(const v1::CancelJobRequest& request) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(request.job_id());
  if (it == jobs_.end()) {
    return absl::NotFoundError(absl::StrCat("job_id: no job \"", request.job_id(), "\""));
  }
  JobEntry& entry = it->second;
  const v1::JobState s = entry.job.state();
  const std::string message = request.reason().empty() ? "cancelled by request" : request.reason();
  if (s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", request.job_id(), " already ended ", JobStateName(s)));
  }
  if (s == v1::JOB_STATE_PENDING || s == v1::JOB_STATE_RESTARTING) {
    scheduler_.Remove(entry.job.job_id());  // queued, no ranks placed
    DT_RETURN_IF_ERROR(TransitionLocked(entry, v1::JOB_STATE_CANCELLED, "Cancelled", message));
  } else if (s != v1::JOB_STATE_CANCELLED) {
    DT_RETURN_IF_ERROR(EndJobLocked(entry, v1::JOB_STATE_CANCELLED, "Cancelled", message));
    DT_RETURN_IF_ERROR(ScheduleLocked());  // its slots are free now
  }
  v1::CancelJobResponse response;
  *response.mutable_job() = ViewLocked(entry);
  return response;
}

absl::Status Coordinator::WatchJob(const v1::WatchJobRequest& request, const WatchSend& send,
                                   const Cancelled& cancelled) {
  int64_t next_event = std::max<int64_t>(1, request.from_event_sequence());
  // Metrics are ordered by (attempt, step); the cursor is the last pair sent.
  int32_t last_attempt = -1;
  int64_t last_step = request.from_step() - 1;
  while (true) {
    v1::Job snapshot;
    int64_t version = 0;
    {
      absl::MutexLock lock(&mu_);
      auto it = jobs_.find(request.job_id());
      if (it == jobs_.end()) {
        return absl::NotFoundError(absl::StrCat("job_id: no job \"", request.job_id(), "\""));
      }
      if (shutdown_) return absl::UnavailableError("coordinator shutting down");
      version = it->second.version;
      snapshot = ViewLocked(it->second);
      snapshot.clear_spec_json();
    }
    DT_ASSIGN_OR_RETURN(std::vector<v1::JobEvent> events,
                        state_->ListEvents(request.job_id(), next_event));
    // Within an attempt only newer steps are read; a new attempt (resumed from a checkpoint)
    // runs lower steps again, so until its first metrics arrive the read starts over.
    const int64_t from = last_attempt < 0 || snapshot.attempt() > last_attempt
                             ? std::max<int64_t>(0, request.from_step())
                             : last_step + 1;
    DT_ASSIGN_OR_RETURN(std::vector<v1::StepMetrics> metrics,
                        state_->ListMetrics(request.job_id(), from, 0));
    for (v1::JobEvent& e : events) {
      next_event = e.sequence() + 1;
      v1::WatchJobResponse update;
      *update.mutable_job() = snapshot;
      *update.mutable_event() = std::move(e);
      if (!send(update)) return absl::CancelledError("watcher went away");
    }
    for (v1::StepMetrics& m : metrics) {
      const bool newer =
          m.attempt() > last_attempt || (m.attempt() == last_attempt && m.step() > last_step);
      if (!newer || m.step() < request.from_step()) continue;
      last_attempt = m.attempt();
      last_step = m.step();
      v1::WatchJobResponse update;
      *update.mutable_job() = snapshot;
      *update.mutable_metrics() = std::move(m);
      if (!send(update)) return absl::CancelledError("watcher went away");
    }
    if (IsTerminal(snapshot.state())) return absl::OkStatus();  // everything up to the end sent
    absl::MutexLock lock(&mu_);
    while (!shutdown_ && jobs_[request.job_id()].version == version) {
      changed_.WaitWithTimeout(&mu_, options_.stream_poll);
      if (cancelled()) return absl::CancelledError("watcher went away");
    }
  }
}

absl::Status Coordinator::GetJobLogs(const v1::GetJobLogsRequest& request, const LogSend& send,
                                     const Cancelled& cancelled) {
  {
    absl::MutexLock lock(&mu_);
    if (jobs_.find(request.job_id()) == jobs_.end()) {
      return absl::NotFoundError(absl::StrCat("job_id: no job \"", request.job_id(), "\""));
    }
  }
  const std::optional<int32_t> rank =
      request.has_rank() ? std::optional<int32_t>(request.rank()) : std::nullopt;
  int64_t from = request.from_sequence();
  int tail = request.tail_lines();
  while (true) {
    int64_t version = 0;
    v1::JobState job_state = v1::JOB_STATE_UNSPECIFIED;
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) return absl::UnavailableError("coordinator shutting down");
      version = jobs_[request.job_id()].version;
      job_state = jobs_[request.job_id()].job.state();
    }
    // Everything stored now, in batches.
    while (true) {
      DT_ASSIGN_OR_RETURN(std::vector<v1::LogLine> lines,
                          state_->ListLogs(request.job_id(), from, rank, tail, kLogBatch));
      tail = 0;
      if (lines.empty()) break;
      from = lines.back().sequence() + 1;
      v1::GetJobLogsResponse batch;
      for (v1::LogLine& l : lines) *batch.add_lines() = std::move(l);
      if (!send(batch)) return absl::CancelledError("reader went away");
      if (static_cast<int>(batch.lines_size()) < kLogBatch) break;
    }
    if (from == 0) from = 1;  // nothing stored yet: follow from the first line
    if (!request.follow() || IsTerminal(job_state)) return absl::OkStatus();
    absl::MutexLock lock(&mu_);
    while (!shutdown_ && jobs_[request.job_id()].version == version) {
      changed_.WaitWithTimeout(&mu_, options_.stream_poll);
      if (cancelled()) return absl::CancelledError("reader went away");
    }
  }
}

// ---- workers ----

absl::StatusOr<v1::RegisterWorkerResponse> Coordinator::RegisterWorker(
    const v1::RegisterWorkerRequest& request) {
  DT_RETURN_IF_ERROR(ValidateRegisterRequest(request));
  absl::MutexLock lock(&mu_);
  DT_ASSIGN_OR_RETURN(RegisterResult result, registry_.Register(request));
  draining_.erase(request.worker_id());
  DT_RETURN_IF_ERROR(state_->PutWorker(result.worker));
  if (!result.lost_ranks.empty()) {
    DT_RETURN_IF_ERROR(FailRanksLocked(
        result.lost_ranks, "WorkerRestarted",
        absl::StrCat("worker ", request.worker_id(), " registered again: its trainers died")));
  }
  DT_RETURN_IF_ERROR(ScheduleLocked());
  v1::RegisterWorkerResponse response;
  const RegistryOptions& o = registry_.options();
  response.mutable_lease_duration()->set_seconds(absl::ToInt64Seconds(o.lease));
  response.mutable_lease_duration()->set_nanos(static_cast<int32_t>(
      absl::ToInt64Nanoseconds(o.lease - absl::Seconds(absl::ToInt64Seconds(o.lease)))));
  response.mutable_heartbeat_interval()->set_seconds(absl::ToInt64Seconds(o.heartbeat_interval));
  response.mutable_heartbeat_interval()->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(
      o.heartbeat_interval - absl::Seconds(absl::ToInt64Seconds(o.heartbeat_interval)))));
  return response;
}

absl::StatusOr<v1::HeartbeatResponse> Coordinator::Heartbeat(const v1::HeartbeatRequest& request) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<HeartbeatResult> result = registry_.Heartbeat(request);
  if (!result.ok()) {
    // Unknown or LOST: either way the agent must register again.
    if (result.status().code() == absl::StatusCode::kFailedPrecondition) {
      return absl::NotFoundError(result.status().message());
    }
    return result.status();
  }
  if (request.draining()) {
    draining_.insert(request.worker_id());
  } else {
    draining_.erase(request.worker_id());
  }
  for (const v1::RankStatus& stray : result->strays) {
    v1::Assignment stop;
    stop.set_kind(v1::ASSIGNMENT_KIND_STOP);
    stop.set_job_id(stray.job_id());
    stop.set_attempt(stray.attempt());
    stop.set_rank(stray.rank());
    stop.set_slot(stray.slot());
    stop.set_reason("NotPlacedHere");
    PushLocked(request.worker_id(), std::move(stop));
  }
  v1::HeartbeatResponse response;
  *response.mutable_lease_expire_time() = ToTimestamp(result->lease_expire_time);
  return response;
}

absl::Status Coordinator::StreamAssignments(const v1::StreamAssignmentsRequest& request,
                                            const AssignmentSend& send,
                                            const Cancelled& cancelled) {
  int64_t generation = 0;
  {
    absl::MutexLock lock(&mu_);
    const v1::Worker* worker = registry_.Find(request.worker_id());
    if (worker == nullptr || worker->state() != v1::WORKER_STATE_READY) {
      return absl::NotFoundError(
          absl::StrCat("worker_id: \"", request.worker_id(), "\" is not registered"));
    }
    Outbox& box = outboxes_[request.worker_id()];
    generation = ++box.generation;
    // A (re)connecting agent first learns every rank placed on it (it ignores those it runs).
    box.queue.clear();
    for (const v1::RankStatus& placed : worker->ranks()) {
      auto it = jobs_.find(placed.job_id());
      if (it == jobs_.end() || it->second.job.attempt() != placed.attempt()) continue;
      v1::RankAssignment rank;
      rank.set_rank(placed.rank());
      rank.set_worker_id(request.worker_id());
      rank.set_slot(placed.slot());
      box.queue.push_back(StartFor(it->second, rank));
    }
    changed_.SignalAll();  // the replaced stream, if any, ends
  }
  while (true) {
    std::deque<v1::Assignment> batch;
    {
      absl::MutexLock lock(&mu_);
      while (true) {
        if (shutdown_) return absl::UnavailableError("coordinator shutting down");
        Outbox& box = outboxes_[request.worker_id()];
        if (box.generation != generation) {
          return absl::AbortedError("a newer assignment stream replaced this one");
        }
        if (!box.queue.empty()) {
          batch.swap(box.queue);
          break;
        }
        changed_.WaitWithTimeout(&mu_, options_.stream_poll);
        if (cancelled()) return absl::CancelledError("worker went away");
      }
    }
    for (v1::Assignment& a : batch) {
      v1::StreamAssignmentsResponse message;
      *message.mutable_assignment() = std::move(a);
      // A lost message is not lost work: the agent reconnects and is sent its placements again.
      if (!send(message)) return absl::CancelledError("worker went away");
    }
  }
}

absl::Status Coordinator::ReportStatus(const v1::ReportStatusRequest& request) {
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(request.job_id());
    if (it == jobs_.end() || request.attempt() < 1 ||
        request.attempt() > it->second.job.attempt() || request.rank() < 0 ||
        request.rank() >= it->second.job.world_size()) {
      return absl::OkStatus();  // about no attempt of a job we know: nothing to do
    }
  }
  // Output and metrics first (outside the lock: the state layer orders its own writes). They
  // are kept even when their attempt has ended meanwhile: the last lines of a failed or drained
  // attempt are the ones people need, and metrics are stored by (attempt, step).
  if (request.log_lines_size() > 0) {
    std::vector<v1::LogLine> lines(request.log_lines().begin(), request.log_lines().end());
    for (v1::LogLine& l : lines) l.set_rank(request.rank());
    DT_RETURN_IF_ERROR(state_->AppendLogs(request.job_id(), std::move(lines)).status());
  }
  const bool has_metrics = request.has_metrics();
  v1::StepMetrics metrics = request.metrics();
  if (has_metrics) {
    metrics.set_attempt(request.attempt());
    DT_RETURN_IF_ERROR(state_->AppendMetrics(request.job_id(), metrics));
  }
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(request.job_id());
  if (it == jobs_.end()) return absl::OkStatus();
  JobEntry& entry = it->second;
  if (request.log_lines_size() > 0 || has_metrics) BumpLocked(entry);
  if (entry.job.attempt() != request.attempt() || !IsActive(entry.job.state())) {
    return absl::OkStatus();  // the attempt is over: its state changes nothing now
  }
  if (has_metrics) latest_[request.job_id()] = metrics;
  BumpLocked(entry);
  if (entry.ranks.size() != static_cast<size_t>(entry.job.world_size())) {
    entry.ranks.assign(entry.job.world_size(), v1::RANK_STATE_STARTING);
  }
  v1::RankState& rank_state = entry.ranks[request.rank()];
  switch (request.state()) {
    case v1::RANK_STATE_RUNNING:
      rank_state = v1::RANK_STATE_RUNNING;
      if (entry.job.state() == v1::JOB_STATE_SCHEDULED &&
          std::all_of(entry.ranks.begin(), entry.ranks.end(), [](v1::RankState s) {
            return s == v1::RANK_STATE_RUNNING || s == v1::RANK_STATE_SUCCEEDED;
          })) {
        DT_RETURN_IF_ERROR(
            TransitionLocked(entry, v1::JOB_STATE_RUNNING, "AllRanksRunning",
                             absl::StrCat(entry.job.world_size(), " rank(s) running")));
      }
      break;
    case v1::RANK_STATE_SUCCEEDED:
      rank_state = v1::RANK_STATE_SUCCEEDED;
      if (std::all_of(entry.ranks.begin(), entry.ranks.end(),
                      [](v1::RankState s) { return s == v1::RANK_STATE_SUCCEEDED; })) {
        DT_RETURN_IF_ERROR(
            EndJobLocked(entry, v1::JOB_STATE_SUCCEEDED, "Completed",
                         absl::StrCat("every rank exited 0 after ",
                                      latest_[request.job_id()].step(), " step(s)")));
        DT_RETURN_IF_ERROR(ScheduleLocked());
      }
      break;
    case v1::RANK_STATE_FAILED:
    case v1::RANK_STATE_KILLED:
      // A rank stopped without being asked to: the gang cannot go on.
      rank_state = request.state();
      DT_RETURN_IF_ERROR(FailAttemptLocked(entry,
                                           request.state() == v1::RANK_STATE_KILLED
                                               ? "TrainerKilled"
                                           : request.exit_code() == kExitDrained ? "WorkerDrained"
                                                                                 : "TrainerFailed",
                                           RankFailure(request), Retryable(request),
                                           /*peer_lost=*/request.exit_code() == kExitPeerLost));
      DT_RETURN_IF_ERROR(ScheduleLocked());
      break;
    default:
      if (request.state() == v1::RANK_STATE_STARTING) rank_state = v1::RANK_STATE_STARTING;
      break;
  }
  return absl::OkStatus();
}

v1::ListWorkersResponse Coordinator::ListWorkers() {
  absl::MutexLock lock(&mu_);
  v1::ListWorkersResponse response;
  for (v1::Worker& w : registry_.List()) {
    w.set_draining(draining_.count(w.worker_id()) > 0);
    *response.add_workers() = std::move(w);
  }
  return response;
}

absl::Status Coordinator::ExpireLeases() {
  absl::MutexLock lock(&mu_);
  // Restarting jobs whose delay passed go back into the queue at their old place.
  const absl::Time now = clock_->Now();
  bool queued = false;
  while (!delayed_.empty() && delayed_.begin()->first <= now) {
    const std::string id = delayed_.begin()->second;
    delayed_.erase(delayed_.begin());
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.job.state() != v1::JOB_STATE_RESTARTING) continue;
    const v1::Job& job = it->second.job;
    DT_RETURN_IF_ERROR(
        scheduler_.Enqueue(job.job_id(), job.priority(), job.world_size(), job.submit_sequence()));
    queued = true;
  }
  std::vector<LostWorker> lost = registry_.ExpireLeases();
  if (lost.empty()) return queued ? ScheduleLocked() : absl::OkStatus();
  std::vector<std::string> ids;
  for (const LostWorker& w : lost) {
    ids.push_back(w.worker.worker_id());
    DT_RETURN_IF_ERROR(state_->PutWorker(w.worker));
  }
  for (const LostWorker& w : lost) {
    DT_RETURN_IF_ERROR(FailRanksLocked(
        w.ranks, "WorkerLost",
        absl::StrCat("worker ", w.worker.worker_id(), " stopped heartbeating (lease ",
                     absl::FormatDuration(registry_.options().lease), " lapsed)")));
  }
  return ScheduleLocked();
}

// ---- checkpoints ----

absl::Status Coordinator::RegisterShard(const v1::RegisterShardRequest& request) {
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(request.job_id());
    if (it == jobs_.end()) {
      return absl::NotFoundError(absl::StrCat("job_id: no job \"", request.job_id(), "\""));
    }
    if (request.rank() < 0 || request.rank() >= it->second.job.world_size()) {
      return absl::InvalidArgumentError(absl::StrCat("rank: ", request.rank(), " outside [0, ",
                                                     it->second.job.world_size(), ")"));
    }
  }
  v1::ShardInfo shard;
  shard.set_rank(request.rank());
  shard.set_path(request.path());
  shard.set_bytes(request.bytes());
  shard.set_crc32c(request.crc32c());
  return state_->RegisterShard(request.job_id(), request.tag(), request.step(), shard);
}

absl::StatusOr<v1::CommitCheckpointResponse> Coordinator::CommitCheckpoint(
    const v1::CommitCheckpointRequest& request) {
  int world = 0, keep_last = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(request.job_id());
    if (it == jobs_.end()) {
      return absl::NotFoundError(absl::StrCat("job_id: no job \"", request.job_id(), "\""));
    }
    world = it->second.job.world_size();
    keep_last = it->second.keep_last;
  }
  // Committed only when every rank's shard is recorded (the shard count is the world size the
  // checkpoint was written at, which a resharded restart may differ from).
  DT_ASSIGN_OR_RETURN(std::vector<v1::Checkpoint> all, state_->ListCheckpoints(request.job_id()));
  for (const v1::Checkpoint& c : all) {
    if (c.tag() == request.tag() && c.shards_size() != world) {
      return absl::FailedPreconditionError(absl::StrCat("checkpoint ", request.tag(), " has ",
                                                        c.shards_size(), " of ", world,
                                                        " shards registered"));
    }
  }
  std::string dir = request.manifest_path();
  if (const size_t slash = dir.rfind('/'); slash != std::string::npos) dir.resize(slash);
  DT_ASSIGN_OR_RETURN(v1::Checkpoint committed,
                      state_->CommitCheckpoint(request.job_id(), request.tag(), request.step(), dir,
                                               clock_->Now()));
  // Retention as the trainer's (job.keep_last): the catalog lists what is on disk. Older
  // records go, committed beyond the newest keep_last and pending ones older than this commit
  // (saves that never finished).
  if (keep_last > 0) {
    DT_ASSIGN_OR_RETURN(std::vector<v1::Checkpoint> now, state_->ListCheckpoints(request.job_id()));
    int newer_committed = 0;
    for (auto it = now.rbegin(); it != now.rend(); ++it) {  // newest first
      const bool committed_one = it->state() == v1::CHECKPOINT_STATE_COMMITTED;
      const bool keep =
          committed_one ? ++newer_committed <= keep_last : it->step() >= committed.step();
      if (!keep) DT_RETURN_IF_ERROR(state_->DeleteCheckpoint(request.job_id(), it->tag()));
    }
  }
  v1::CommitCheckpointResponse response;
  *response.mutable_checkpoint() = std::move(committed);
  return response;
}

absl::StatusOr<v1::ListCheckpointsResponse> Coordinator::ListCheckpoints(
    const v1::ListCheckpointsRequest& request) {
  {
    absl::MutexLock lock(&mu_);
    if (jobs_.find(request.job_id()) == jobs_.end()) {
      return absl::NotFoundError(absl::StrCat("job_id: no job \"", request.job_id(), "\""));
    }
  }
  DT_ASSIGN_OR_RETURN(std::vector<v1::Checkpoint> all, state_->ListCheckpoints(request.job_id()));
  v1::ListCheckpointsResponse response;
  for (v1::Checkpoint& c : all) *response.add_checkpoints() = std::move(c);
  return response;
}

// ---- the rest ----

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
  stats.workers = registry_.Counts();
  const absl::Time now = clock_->Now();
  for (const v1::Worker& w : registry_.List()) {
    if (w.state() != v1::WORKER_STATE_READY) continue;
    stats.max_heartbeat_age_seconds =
        std::max(stats.max_heartbeat_age_seconds,
                 absl::ToDoubleSeconds(now - FromTimestamp(w.last_heartbeat_time())));
  }
  return stats;
}

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
    if (entry.job.attempt() != rank.attempt() || !IsActive(entry.job.state())) continue;
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
    return scheduler_.Enqueue(job.job_id(), job.priority(), job.world_size(),
                              job.submit_sequence());
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

absl::Status Coordinator::ScheduleLocked() {
  if (scheduler_.empty()) return absl::OkStatus();
  std::map<std::string, std::vector<int>> free = registry_.FreeSlots();
  for (const std::string& id : draining_) free.erase(id);
  std::vector<Placement> placements = scheduler_.Schedule(free);
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
    std::sort(workers.begin(), workers.end());
    workers.erase(std::unique(workers.begin(), workers.end()), workers.end());
    DT_RETURN_IF_ERROR(
        TransitionLocked(entry, v1::JOB_STATE_SCHEDULED, "GangScheduled",
                         absl::StrCat("attempt ", job.attempt(), ": ", job.world_size(),
                                      " rank(s) on ", absl::StrJoin(workers, ", ")),
                         workers));
    for (const v1::RankAssignment& r : placement.ranks) {
      PushLocked(r.worker_id(), StartFor(entry, r));
    }
  }
  return absl::OkStatus();
}

void Coordinator::PushLocked(const std::string& worker_id, v1::Assignment assignment) {
  outboxes_[worker_id].queue.push_back(std::move(assignment));
  changed_.SignalAll();
}

v1::Assignment Coordinator::StartFor(const JobEntry& entry, const v1::RankAssignment& rank) const {
  v1::Assignment a;
  a.set_kind(v1::ASSIGNMENT_KIND_START);
  a.set_job_id(entry.job.job_id());
  a.set_attempt(entry.job.attempt());
  a.set_rank(rank.rank());
  a.set_world_size(entry.job.world_size());
  a.set_slot(rank.slot());
  a.set_spec_json(entry.job.spec_json());
  // Every attempt rendezvouses in its own key space, so a late rank of an old attempt can never
  // meet a new one.
  a.set_store_prefix(absl::StrCat("jobs/", entry.job.job_id(), "/attempt-", entry.job.attempt()));
  a.set_reason("GangScheduled");
  return a;
}

v1::Job Coordinator::ViewLocked(const JobEntry& entry) {
  v1::Job view = entry.job;
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
