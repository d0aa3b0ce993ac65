// Coordinator: JobService (docs/wire-api.md, "JobService"): submitting, reading, listing,
// cancelling and watching jobs, and their trainers' output.
#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/grpc/proto_time.h"
#include "common/jobspec/job_device.h"
#include "common/limits/limits.h"
#include "common/status/status_macros.h"
#include "coordinator/server/coordinator.h"
#include "coordinator/server/coordinator_internal.h"

namespace dstrain::coordinator {
namespace {

using limits::kLogBatchLines;
using limits::kMaxMetricsPerGetJob;
using limits::kWatchMetricsPage;

}  // namespace

absl::StatusOr<v1::SubmitJobResponse> Coordinator::SubmitJob(const v1::SubmitJobRequest& request,
                                                             const Caller& caller) {
  DT_ASSIGN_OR_RETURN(ValidatedJob valid, ValidateSubmission(request, options_.limits));
  absl::MutexLock lock(&mu_);
  v1::SubmitJobResponse response;
  if (auto it = jobs_.find(valid.job_id); it != jobs_.end()) {
    // Idempotent on the id: the same job again, from its owner, is the job that exists.
    if (it->second.job.owner() != caller.principal) {
      return absl::AlreadyExistsError(
          absl::StrCat("job_id: \"", valid.job_id, "\" exists (another principal's job)"));
    }
    if (it->second.job.spec_json() != valid.spec_json ||
        it->second.job.priority() != request.priority() ||
        DeviceOf(it->second.job) != valid.device) {
      return absl::AlreadyExistsError(
          absl::StrCat("job_id: \"", valid.job_id, "\" exists with another spec or priority"));
    }
    *response.mutable_job() = ViewLocked(it->second);
    response.set_created(false);
    return response;
  }
  RateBucket& submissions = submissions_[caller.principal];
  const double available = submissions.Available(
      clock_->Now(), options_.submissions_per_minute / 60, options_.submission_burst);
  if (available < 1) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s is over its submission rate (%g jobs per minute, bursts of %g): retry in %.0f s",
        caller.principal.empty() ? "the coordinator" : caller.principal,
        options_.submissions_per_minute, options_.submission_burst,
        std::ceil((1 - available) * 60 / options_.submissions_per_minute)));
  }
  submissions.Take(1);
  JobEntry entry;
  entry.keep_last = valid.keep_last;
  entry.checkpoint_every = CheckpointEveryOf(valid.spec_json);
  entry.queued_since = clock_->Now();
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
  job.set_device(valid.device);
  job.set_pipeline_stages(valid.pipeline_stages);
  job.set_owner(caller.principal);
  v1::JobEvent event;
  event.set_to_state(v1::JOB_STATE_PENDING);
  event.set_reason("Submitted");
  event.set_message(absl::StrCat("world size ", valid.world_size, ", priority ", request.priority(),
                                 ", device ", jobspec::JobDeviceName(valid.device),
                                 caller.principal.empty() ? "" : ", by " + caller.principal));
  *event.mutable_time() = job.create_time();
  // Stored before anything else sees it: an answer means the job survives a restart.
  DT_RETURN_IF_ERROR(state_->PutJob(job, &event).status());
  ++next_submit_sequence_;
  DT_RETURN_IF_ERROR(EnqueueLocked(job));
  auto [it, inserted] = jobs_.emplace(valid.job_id, std::move(entry));
  BumpLocked(it->second);
  DT_RETURN_IF_ERROR(ScheduleLocked());
  *response.mutable_job() = ViewLocked(it->second);
  response.set_created(true);
  return response;
}

absl::StatusOr<v1::GetJobResponse> Coordinator::GetJob(const v1::GetJobRequest& request,
                                                       const Caller& caller) {
  v1::GetJobResponse response;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(request.job_id());
    if (it == jobs_.end()) {
      return internal::NoSuchJob(request.job_id());
    }
    DT_RETURN_IF_ERROR(caller.MaySee(request.job_id(), it->second.job.owner()));
    *response.mutable_job() = ViewLocked(it->second);
  }
  DT_ASSIGN_OR_RETURN(std::vector<v1::JobEvent> events, state_->ListEvents(request.job_id(), 1));
  for (v1::JobEvent& e : events) *response.add_events() = std::move(e);
  if (request.metrics_limit() > kMaxMetricsPerGetJob) {
    return absl::ResourceExhaustedError(
        absl::StrCat("metrics_limit: ", request.metrics_limit(), " is over the limit of ",
                     kMaxMetricsPerGetJob, " metrics per GetJob (WatchJob streams them all)"));
  }
  const int limit = request.metrics_limit() > 0 ? request.metrics_limit() : 1;
  DT_ASSIGN_OR_RETURN(std::vector<v1::StepMetrics> metrics,
                      state_->ListMetrics(request.job_id(), 0, limit));
  for (v1::StepMetrics& m : metrics) *response.add_metrics() = std::move(m);
  return response;
}

absl::StatusOr<v1::ListJobsResponse> Coordinator::ListJobs(const v1::ListJobsRequest& request,
                                                           const Caller& caller) {
  if (request.page_size() < 0) return absl::InvalidArgumentError("page_size: negative");
  const int limit = request.page_size() == 0 ? limits::kDefaultListPage
                                             : std::min(request.page_size(), limits::kMaxListPage);
  absl::MutexLock lock(&mu_);
  v1::ListJobsResponse response;
  // Pages in job-id order; the token is the last id of the previous page.
  for (auto it = jobs_.upper_bound(request.page_token()); it != jobs_.end(); ++it) {
    const v1::Job& job = it->second.job;
    if (!caller.SeesAllJobs() && job.owner() != caller.principal) continue;
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

absl::StatusOr<v1::CancelJobResponse> Coordinator::CancelJob(const v1::CancelJobRequest& request,
                                                             const Caller& caller) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(request.job_id());
  if (it == jobs_.end()) {
    return internal::NoSuchJob(request.job_id());
  }
  JobEntry& entry = it->second;
  DT_RETURN_IF_ERROR(caller.MayControl(request.job_id(), entry.job.owner()));
  const v1::JobState s = entry.job.state();
  std::string message = request.reason().empty() ? "cancelled by request" : request.reason();
  if (!caller.Describe().empty()) absl::StrAppend(&message, " (by ", caller.Describe(), ")");
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
                                   const Cancelled& cancelled, const Caller& caller) {
  int64_t next_event = std::max<int64_t>(1, request.from_event_sequence());
  // Metrics are ordered by (attempt, step); the cursor is the last pair sent. A new attempt
  // (resumed from a checkpoint) runs lower steps again: its records come after the cursor in
  // that order, from from_step on.
  CoordinatorState::MetricsCursor cursor;
  const absl::Time started = clock_->Now();
  while (true) {
    v1::Job snapshot;
    int64_t version = 0;
    {
      absl::MutexLock lock(&mu_);
      auto it = jobs_.find(request.job_id());
      if (it == jobs_.end()) {
        return internal::NoSuchJob(request.job_id());
      }
      DT_RETURN_IF_ERROR(caller.MaySee(request.job_id(), it->second.job.owner()));
      if (shutdown_) return absl::UnavailableError("coordinator shutting down");
      version = it->second.version;
      snapshot = ViewLocked(it->second);
      snapshot.clear_spec_json();
    }
    DT_ASSIGN_OR_RETURN(std::vector<v1::JobEvent> events,
                        state_->ListEvents(request.job_id(), next_event));
    for (v1::JobEvent& e : events) {
      next_event = e.sequence() + 1;
      v1::WatchJobResponse update;
      *update.mutable_job() = snapshot;
      *update.mutable_event() = std::move(e);
      if (!send(update)) return absl::CancelledError("watcher went away");
    }
    // A page at a time: a watcher of a long job holds kWatchMetricsPage records, not its history.
    while (true) {
      DT_ASSIGN_OR_RETURN(std::vector<v1::StepMetrics> page,
                          state_->ListMetricsPage(request.job_id(), request.from_step(), cursor,
                                                  kWatchMetricsPage));
      for (v1::StepMetrics& m : page) {
        cursor = {static_cast<uint32_t>(m.attempt()), static_cast<uint64_t>(m.step())};
        v1::WatchJobResponse update;
        *update.mutable_job() = snapshot;
        *update.mutable_metrics() = std::move(m);
        if (!send(update)) return absl::CancelledError("watcher went away");
      }
      if (static_cast<int>(page.size()) < kWatchMetricsPage) break;
    }
    if (IsTerminal(snapshot.state())) return absl::OkStatus();  // everything up to the end sent
    absl::MutexLock lock(&mu_);
    // A job deleted meanwhile (ExpireJobs) ends the wait; the next round says so.
    while (!shutdown_ && VersionLocked(request.job_id()) == version) {
      changed_.WaitWithTimeout(&mu_, options_.stream_poll);
      if (cancelled()) return absl::CancelledError("watcher went away");
      DT_RETURN_IF_ERROR(
          internal::StreamWithinMaximum(clock_->Now(), started, options_.max_stream));
    }
  }
}

absl::Status Coordinator::GetJobLogs(const v1::GetJobLogsRequest& request, const LogSend& send,
                                     const Cancelled& cancelled, const Caller& caller) {
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(request.job_id());
    if (it == jobs_.end()) return internal::NoSuchJob(request.job_id());
    DT_RETURN_IF_ERROR(caller.MaySee(request.job_id(), it->second.job.owner()));
  }
  const std::optional<int32_t> rank =
      request.has_rank() ? std::optional<int32_t>(request.rank()) : std::nullopt;
  int64_t from = request.from_sequence();
  int tail = request.tail_lines();
  const absl::Time started = clock_->Now();
  while (true) {
    int64_t version = 0;
    v1::JobState job_state = v1::JOB_STATE_UNSPECIFIED;
    {
      absl::MutexLock lock(&mu_);
      if (shutdown_) return absl::UnavailableError("coordinator shutting down");
      auto it = jobs_.find(request.job_id());
      if (it == jobs_.end()) return internal::NoSuchJob(request.job_id());
      version = it->second.version;
      job_state = it->second.job.state();
    }
    // Everything stored now, in batches.
    while (true) {
      DT_ASSIGN_OR_RETURN(std::vector<v1::LogLine> lines,
                          state_->ListLogs(request.job_id(), from, rank, tail, kLogBatchLines));
      tail = 0;
      if (lines.empty()) break;
      from = lines.back().sequence() + 1;
      v1::GetJobLogsResponse batch;
      for (v1::LogLine& l : lines) *batch.add_lines() = std::move(l);
      if (!send(batch)) return absl::CancelledError("reader went away");
      if (static_cast<int>(batch.lines_size()) < kLogBatchLines) break;
    }
    if (from == 0) from = 1;  // nothing stored yet: follow from the first line
    if (!request.follow() || IsTerminal(job_state)) return absl::OkStatus();
    absl::MutexLock lock(&mu_);
    // A job deleted meanwhile (ExpireJobs) ends the wait; the next round says so.
    while (!shutdown_ && VersionLocked(request.job_id()) == version) {
      changed_.WaitWithTimeout(&mu_, options_.stream_poll);
      if (cancelled()) return absl::CancelledError("reader went away");
      DT_RETURN_IF_ERROR(
          internal::StreamWithinMaximum(clock_->Now(), started, options_.max_stream));
    }
  }
}

absl::StatusOr<int> Coordinator::ExpireJobs() {
  if (options_.job_ttl <= absl::ZeroDuration()) return 0;
  std::vector<std::string> expired;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (const auto& [id, entry] : jobs_) {
      if (IsTerminal(entry.job.state()) && entry.job.has_end_time() &&
          FromTimestamp(entry.job.end_time()) + options_.job_ttl <= now) {
        expired.push_back(id);
      }
    }
    for (const std::string& id : expired) DT_RETURN_IF_ERROR(DeleteJobLocked(id));
  }
  if (!expired.empty()) DT_RETURN_IF_ERROR(state_->Compact());
  return static_cast<int>(expired.size());
}

absl::Status Coordinator::DeleteJob(const v1::DeleteJobRequest& request, const Caller& caller) {
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(request.job_id());
    if (it == jobs_.end()) return internal::NoSuchJob(request.job_id());
    DT_RETURN_IF_ERROR(caller.MayControl(request.job_id(), it->second.job.owner()));
    if (!IsTerminal(it->second.job.state())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", request.job_id(), " is ", JobStateName(it->second.job.state()),
                       ": only an ended job can be deleted (cancel it first)"));
    }
    DT_RETURN_IF_ERROR(DeleteJobLocked(request.job_id()));
  }
  return state_->Compact();
}

absl::Status Coordinator::DeleteJobLocked(const std::string& job_id) {
  // From the database, then from the service: a failed delete leaves the job as it was.
  DT_RETURN_IF_ERROR(state_->DeleteJob(job_id));
  jobs_.erase(job_id);
  latest_.erase(job_id);
  changed_.SignalAll();  // streams of the deleted job end
  return absl::OkStatus();
}

}  // namespace dstrain::coordinator
