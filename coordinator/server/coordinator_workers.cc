// Coordinator: WorkerService (docs/wire-api.md, "WorkerService"): registration, heartbeats and
// leases, each worker's assignment stream and outbox, and the ranks' status reports that move
// their jobs along.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/crypto/hmac.h"
#include "common/grpc/proto_time.h"
#include "common/runtime/exit_codes.h"
#include "common/status/status_macros.h"
#include "coordinator/server/coordinator.h"
#include "coordinator/server/coordinator_internal.h"

namespace dstrain::coordinator {
namespace {

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

// What a worker's session token is the MAC of: its id and when this registration happened.
static std::string SessionSubject(const v1::Worker& worker) {
  return absl::StrCat("workers/", worker.worker_id(), "/", worker.register_time().seconds(), ".",
                      worker.register_time().nanos());
}

absl::Status Coordinator::CheckSessionLocked(const std::string& worker_id,
                                             const std::string& token) const {
  if (options_.worker_sessions == nullptr) return absl::OkStatus();
  const v1::Worker* worker = registry_.Find(worker_id);
  if (worker == nullptr) return absl::OkStatus();
  if (!crypto::ConstantTimeEquals(options_.worker_sessions->TokenFor(SessionSubject(*worker)),
                                  token)) {
    return absl::PermissionDeniedError(absl::StrCat("session_token: not the token of worker \"",
                                                    worker_id, "\"'s current registration"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::RegisterWorkerResponse> Coordinator::RegisterWorker(
    const v1::RegisterWorkerRequest& request, const Caller& caller) {
  DT_RETURN_IF_ERROR(ValidateRegisterRequest(request));
  DT_RETURN_IF_ERROR(caller.IsWorker(request.worker_id()));
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
  if (options_.worker_sessions != nullptr) {
    response.set_session_token(options_.worker_sessions->TokenFor(SessionSubject(result.worker)));
  }
  return response;
}

absl::StatusOr<v1::HeartbeatResponse> Coordinator::Heartbeat(const v1::HeartbeatRequest& request,
                                                             const Caller& caller) {
  DT_RETURN_IF_ERROR(caller.IsWorker(request.worker_id()));
  absl::MutexLock lock(&mu_);
  DT_RETURN_IF_ERROR(CheckSessionLocked(request.worker_id(), request.session_token()));
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
                                            const AssignmentSend& send, const Cancelled& cancelled,
                                            const Caller& caller) {
  DT_RETURN_IF_ERROR(caller.IsWorker(request.worker_id()));
  int64_t generation = 0;
  {
    absl::MutexLock lock(&mu_);
    const v1::Worker* worker = registry_.Find(request.worker_id());
    if (worker == nullptr || worker->state() != v1::WORKER_STATE_READY) {
      return absl::NotFoundError(
          absl::StrCat("worker_id: \"", request.worker_id(), "\" is not registered"));
    }
    DT_RETURN_IF_ERROR(CheckSessionLocked(request.worker_id(), request.session_token()));
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
      rank.set_slot_kind(SlotKindOf(*worker, placed.slot()));
      box.queue.push_back(StartFor(it->second, rank));
    }
    changed_.SignalAll();  // the replaced stream, if any, ends
  }
  const absl::Time started = clock_->Now();
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
        // At its maximum the stream just ends: the agent reconnects and is sent its placements
        // again, and an OK end is no coordinator error to it.
        if (!internal::StreamWithinMaximum(clock_->Now(), started, options_.max_stream).ok()) {
          return absl::OkStatus();
        }
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

int Coordinator::TakeLogAllowanceLocked(JobEntry& entry, int lines) {
  const double available = entry.log_allowance.Available(
      clock_->Now(), options_.log_lines_per_second, options_.log_burst_lines);
  const int kept = static_cast<int>(std::min<double>(lines, std::floor(available)));
  entry.log_allowance.Take(kept);
  return kept;
}

absl::Status Coordinator::ReportStatus(const v1::ReportStatusRequest& request,
                                       const Caller& caller) {
  DT_RETURN_IF_ERROR(caller.IsWorker(request.worker_id()));
  int kept_lines = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(request.job_id());
    if (it == jobs_.end() || request.attempt() < 1 ||
        request.attempt() > it->second.job.attempt() || request.rank() < 0 ||
        request.rank() >= it->second.job.world_size()) {
      return absl::OkStatus();  // about no attempt of a job we know: nothing to do
    }
    DT_RETURN_IF_ERROR(CheckSessionLocked(request.worker_id(), request.session_token()));
    // Only the worker the rank was placed on speaks for it: nobody else can end, fail or fill
    // the log of a job. (Which worker a caller is, is what it says until workers prove their
    // identity with certificates; docs/service.md, "Who may report, and what is bounded".)
    const auto placed = it->second.rank_workers.find(request.attempt());
    if (placed == it->second.rank_workers.end() ||
        placed->second[request.rank()] != request.worker_id()) {
      return absl::PermissionDeniedError(absl::StrCat(
          "worker_id: \"", request.worker_id(), "\" does not hold rank ", request.rank(),
          " of job \"", request.job_id(), "\" attempt ", request.attempt()));
    }
    kept_lines = TakeLogAllowanceLocked(it->second, request.log_lines_size());
  }
  // Output and metrics first (outside the lock: the state layer orders its own writes). They
  // are kept even when their attempt has ended meanwhile: the last lines of a failed or drained
  // attempt are the ones people need, and metrics are stored by (attempt, step).
  if (request.log_lines_size() > 0) {
    std::vector<v1::LogLine> lines(request.log_lines().begin(),
                                   request.log_lines().begin() + kept_lines);
    const int dropped = request.log_lines_size() - kept_lines;
    if (dropped > 0) {
      v1::LogLine& note = lines.emplace_back(request.log_lines(kept_lines));
      note.set_text(absl::StrCat("[dstrain-coordinator: ", dropped,
                                 " line(s) dropped: this job's log is limited to ",
                                 options_.log_lines_per_second, " lines/s]"));
    }
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
  if (entry.job.attempt() != request.attempt() || !internal::IsActive(entry.job.state())) {
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
    DT_RETURN_IF_ERROR(EnqueueLocked(it->second.job));
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
  a.set_slot_kind(rank.slot_kind());
  a.set_spec_json(entry.job.spec_json());
  // Every attempt rendezvouses in its own key space, so a late rank of an old attempt can never
  // meet a new one.
  a.set_store_prefix(StoreCredentials::ScopeOf(entry.job.job_id(), entry.job.attempt()));
  if (options_.store_credentials != nullptr) {
    a.set_store_token(options_.store_credentials->TokenFor(a.store_prefix()));
  }
  a.set_reason("GangScheduled");
  return a;
}

absl::Status Coordinator::MayUseStoreScope(const Caller& caller, absl::string_view scope) {
  if (caller.trusted) return absl::OkStatus();
  // "jobs/<job_id>/attempt-<n>"
  const std::vector<absl::string_view> parts = absl::StrSplit(scope, '/');
  absl::string_view attempt_part = parts.size() == 3 ? parts[2] : absl::string_view();
  int attempt = 0;
  const bool parsed = parts.size() == 3 && parts[0] == "jobs" &&
                      absl::ConsumePrefix(&attempt_part, "attempt-") &&
                      absl::SimpleAtoi(attempt_part, &attempt);
  if (parsed) {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(std::string(parts[1]));
    if (it != jobs_.end() && it->second.job.attempt() == attempt &&
        internal::HoldsARank(it->second.job, caller.worker)) {
      return absl::OkStatus();
    }
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "store scope \"", scope, "\": ", caller.Describe(), " holds no rank of that attempt"));
}

}  // namespace dstrain::coordinator
