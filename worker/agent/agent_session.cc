// Agent: the session thread (RegisterWorker, then heartbeats; register again when the coordinator
// forgets the worker) and the stream thread (StreamAssignments, reconnecting with backoff).
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "worker/agent/agent.h"
#include "worker/agent/agent_internal.h"

namespace dstrain::agent {

using internal::BackoffFor;
using internal::Deadline;
using internal::Describe;
using internal::Log;

bool Agent::Stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

bool Agent::SleepUnlessStopping(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
}

void Agent::CancelStreamLocked() {
  if (stream_context_ != nullptr) stream_context_->TryCancel();
}

bool Agent::TrackSessionCall(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  session_context_ = context;
  return context == nullptr || !stopping_;
}

void Agent::SetReady(bool ready) {
  // Held across the callback, so callers cannot overtake each other (a late "true" after
  // shutdown's "false").
  absl::MutexLock ready_lock(&ready_mu_);
  if (ready && Stopping()) return;
  if (ready_ == ready) return;
  ready_ = ready;
  if (on_ready_) on_ready_(ready);
}

void Agent::CoordinatorError(const char* rpc) {
  if (metrics_ != nullptr) metrics_->CoordinatorError(rpc);
}

void Agent::StopAllTrainers(const std::string& reason) {
  absl::Notification done;
  Command stop;
  stop.kind = Command::Kind::kStopAll;
  stop.reason = reason;
  stop.done = &done;
  Post(std::move(stop));
  done.WaitForNotification();
}

void Agent::SessionLoop() {
  retry::Backoff backoff(BackoffFor(options_));
  // Logged once per kind of failure, not at every retry.
  grpc::StatusCode last_error = grpc::StatusCode::OK;
  while (!Stopping()) {
    v1::RegisterWorkerRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_hostname(options_.hostname);
    request.set_cpu_slots(options_.slots);
    for (const GpuSlot& gpu : options_.gpus) *request.add_gpus() = gpu.info;
    request.set_metrics_address(options_.metrics_address);
    request.set_version(options_.version);
    v1::RegisterWorkerResponse response;
    grpc::ClientContext context;
    context.set_deadline(Deadline(options_.rpc_timeout));
    if (!TrackSessionCall(&context)) break;
    const grpc::Status status = stub_->RegisterWorker(&context, request, &response);
    TrackSessionCall(nullptr);
    if (!status.ok()) {
      CoordinatorError("RegisterWorker");
      if (status.error_code() != last_error) {
        Log(absl::StrCat("cannot register with the coordinator at ", options_.coordinator, ": ",
                         Describe(status), " (retrying)"));
      }
      last_error = status.error_code();
      if (SleepUnlessStopping(backoff.Next())) break;
      continue;
    }
    backoff.Reset();
    last_error = grpc::StatusCode::OK;
    absl::Duration interval = options_.default_heartbeat_interval;
    if (response.has_heartbeat_interval()) {
      const absl::Duration d = absl::Seconds(response.heartbeat_interval().seconds()) +
                               absl::Nanoseconds(response.heartbeat_interval().nanos());
      if (d > absl::ZeroDuration()) interval = d;
    }
    interval = std::clamp(interval, absl::Milliseconds(10), absl::Minutes(1));
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      registered_ = true;
      ++session_;
      session_token_ = response.session_token();
    }
    if (metrics_ != nullptr) {
      metrics_->SetRegistered(true);
      metrics_->HeartbeatSucceeded();
    }
    SetReady(true);
    Log(absl::StrCat("registered as ", options_.worker_id, " with the coordinator at ",
                     options_.coordinator, " (", options_.gpus.size(), " GPU slot(s), ",
                     options_.slots, " CPU slot(s), heartbeat every ",
                     absl::FormatDuration(interval), ")"));

    bool lost = false;
    while (!lost) {
      if (SleepUnlessStopping(interval)) return;
      v1::HeartbeatRequest beat;
      beat.set_worker_id(options_.worker_id);
      beat.set_draining(draining_.load());
      beat.set_session_token(SessionToken());
      for (v1::RankStatus& rank : Ranks()) *beat.add_ranks() = std::move(rank);
      v1::HeartbeatResponse beat_response;
      grpc::ClientContext beat_context;
      beat_context.set_deadline(Deadline(options_.rpc_timeout));
      if (!TrackSessionCall(&beat_context)) return;
      const grpc::Status beat_status = stub_->Heartbeat(&beat_context, beat, &beat_response);
      TrackSessionCall(nullptr);
      if (Stopping()) return;
      if (beat_status.ok()) {
        if (metrics_ != nullptr) metrics_->HeartbeatSucceeded();
        if (last_error != grpc::StatusCode::OK) Log("heartbeats succeed again");
        last_error = grpc::StatusCode::OK;
        SetReady(true);
        continue;
      }
      CoordinatorError("Heartbeat");
      const grpc::StatusCode code = beat_status.error_code();
      // PERMISSION_DENIED: another registration of this worker id replaced ours.
      if (code == grpc::StatusCode::NOT_FOUND || code == grpc::StatusCode::FAILED_PRECONDITION ||
          code == grpc::StatusCode::PERMISSION_DENIED) {
        Log(absl::StrCat("the coordinator no longer knows this worker (", Describe(beat_status),
                         "): stopping its trainers and registering again"));
        lost = true;
        break;
      }
      SetReady(false);
      if (code != last_error) {
        Log(absl::StrCat("heartbeat failed: ", Describe(beat_status),
                         " (retrying; trainers keep running)"));
      }
      last_error = code;
      // A stream to an unreachable coordinator may hang silently: start it over.
      if (code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED) {
        absl::MutexLock lock(&mu_);
        CancelStreamLocked();
      }
    }
    // Its ranks were given up by the coordinator: they must not keep running (and holding slots)
    // under the new registration.
    {
      absl::MutexLock lock(&mu_);
      registered_ = false;
      ++session_;
      CancelStreamLocked();
    }
    SetReady(false);
    if (metrics_ != nullptr) metrics_->SetRegistered(false);
    StopAllTrainers("the coordinator no longer knows this worker");
  }
}

// ---------------------------------------------------------------------------------------------
// Assignment stream.

void Agent::StreamLoop() {
  retry::Backoff backoff(BackoffFor(options_));
  grpc::StatusCode last_error = grpc::StatusCode::OK;
  for (;;) {
    uint64_t session;
    grpc::ClientContext context;
    v1::StreamAssignmentsRequest request;
    request.set_worker_id(options_.worker_id);
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &Agent::StreamMayConnect));
      if (stopping_) return;
      session = session_;
      stream_context_ = &context;
      request.set_session_token(session_token_);
    }
    const absl::Time opened = absl::Now();
    std::unique_ptr<grpc::ClientReader<v1::StreamAssignmentsResponse>> reader =
        stub_->StreamAssignments(&context, request);
    v1::StreamAssignmentsResponse response;
    bool got_any = false;
    while (reader->Read(&response)) {
      got_any = true;
      Command command;
      command.kind = Command::Kind::kAssignment;
      command.assignment = std::move(*response.mutable_assignment());
      command.session = session;
      Post(std::move(command));
    }
    const grpc::Status status = reader->Finish();
    bool cancelled_here;
    {
      absl::MutexLock lock(&mu_);
      stream_context_ = nullptr;
      cancelled_here = stopping_ || session_ != session;
    }
    if (!status.ok() && !cancelled_here && status.error_code() != grpc::StatusCode::CANCELLED) {
      CoordinatorError("StreamAssignments");
      if (status.error_code() != last_error) {
        Log(absl::StrCat("assignment stream: ", Describe(status), " (reconnecting)"));
      }
      last_error = status.error_code();
    } else if (status.ok() || got_any) {
      last_error = grpc::StatusCode::OK;
    }
    if (got_any || absl::Now() - opened > absl::Seconds(10)) backoff.Reset();
    if (SleepUnlessStopping(backoff.Next())) return;
  }
}

}  // namespace dstrain::agent
