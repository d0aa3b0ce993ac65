#include "worker/agent/agent.h"

#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/grpc/grpc_status.h"
#include "common/grpc/proto_time.h"
#include "common/retry/retry.h"
#include "worker/agent/agent_config.h"
#include "worker/agent/metrics_tail.h"
#include "worker/agent/trainer_process.h"
#include "worker/env/env.h"

namespace dstrain::agent {
namespace {

// Ranks remembered as finished, so a repeated START for them stays a no-op.
constexpr size_t kMaxFinished = 4096;
// Longest line quoted in a final report's message.
constexpr size_t kMaxQuotedLine = 512;
// How long the output of an exited trainer may still be read.
constexpr int kDrainMs = 200;

void Log(const std::string& message) {
  absl::FPrintF(stderr, "dstrain-worker: %s\n", message);
  std::fflush(stderr);
}

int CpuCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  return sched_getaffinity(0, sizeof(set), &set) == 0 ? std::max(1, CPU_COUNT(&set)) : 1;
}

// "SUCCEEDED" for RANK_STATE_SUCCEEDED.
std::string StateName(v1::RankState state) {
  std::string name = v1::RankState_Name(state);
  const std::string prefix = "RANK_STATE_";
  return name.compare(0, prefix.size(), prefix) == 0 ? name.substr(prefix.size()) : name;
}

std::string KeyName(const std::string& job, int32_t attempt, int32_t rank) {
  return absl::StrCat("job ", job, " attempt ", attempt, " rank ", rank);
}

std::chrono::system_clock::time_point Deadline(absl::Duration d) {
  return absl::ToChronoTime(absl::Now() + d);
}

std::string Describe(const grpc::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(FromGrpcCode(status.error_code())), ": ",
                      status.error_message());
}

// The options' backoff for one retry loop.
retry::BackoffOptions BackoffFor(const AgentOptions& options) {
  retry::BackoffOptions backoff;
  backoff.initial = options.backoff_initial;
  backoff.max = options.backoff_max;
  return backoff;
}

}  // namespace

// One trainer process and what the supervisor knows about it.
struct Agent::Trainer {
  RankKey key;
  v1::Assignment assignment;
  std::string dir;
  std::unique_ptr<TrainerProcess> process;
  std::unique_ptr<MetricsTail> tail;  // rank 0 only
  std::unique_ptr<StepMetricsParser> parser;
  v1::RankState state = v1::RANK_STATE_STARTING;
  bool transition_pending = false;  // state changed; the next report carries it
  uint64_t table_generation = 0;
  std::vector<v1::LogLine> pending;  // output not yet reported
  std::deque<std::string> last_lines;
  absl::Time last_flush;
  bool bad_metrics_logged = false;
  bool stop_requested = false;
  std::string stop_reason;
  absl::Time kill_at = absl::InfiniteFuture();
  bool sigkilled = false;
};

Agent::Agent(AgentOptions options, AgentMetrics* metrics, std::function<void(bool)> on_ready)
    : options_(std::move(options)), metrics_(metrics), on_ready_(std::move(on_ready)) {}

Agent::~Agent() { Shutdown(); }

absl::Status Agent::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (started_) return absl::FailedPreconditionError("Agent::Start called twice");
  }
  if (options_.coordinator.empty()) return absl::InvalidArgumentError("coordinator is empty");
  if (!IsValidWorkerId(options_.worker_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker_id '", options_.worker_id, "' must match [a-z][a-z0-9-]{0,62}"));
  }
  if (options_.slots < 1) return absl::InvalidArgumentError("slots must be >= 1");
  if (options_.work_dir.empty() || options_.work_dir[0] != '/') {
    return absl::InvalidArgumentError("work_dir must be an absolute path");
  }
  if (options_.trainer.empty()) return absl::InvalidArgumentError("no trainer executable");
  std::error_code ec;
  std::filesystem::create_directories(options_.work_dir + "/jobs", ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create ", options_.work_dir, "/jobs: ", ec.message()));
  }
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));

  grpc::ChannelArguments args;
  const int backoff_min_ms =
      static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(options_.backoff_initial)));
  const int backoff_max_ms = static_cast<int>(
      std::max<int64_t>(backoff_min_ms, absl::ToInt64Milliseconds(options_.backoff_max)));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, backoff_min_ms);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, backoff_min_ms);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, backoff_max_ms);
  stub_ = v1::WorkerService::NewStub(
      grpc::CreateCustomChannel(options_.coordinator, grpc::InsecureChannelCredentials(), args));

  const int cpus = options_.cpus > 0 ? options_.cpus : CpuCount();
  threads_per_trainer_ = std::max(1, cpus / options_.slots);
  slot_owner_.assign(static_cast<size_t>(options_.slots), nullptr);
  if (metrics_ != nullptr) {
    metrics_->SetSlots(options_.slots);
    metrics_->SetRegistered(false);
    metrics_->SetRanks(0, 0);
    metrics_->SetPendingReports(0);
  }
  {
    absl::MutexLock lock(&mu_);
    started_ = true;
  }
  supervisor_thread_ = std::thread([this] { SuperviseLoop(); });
  reporter_thread_ = std::thread([this] { ReportLoop(); });
  stream_thread_ = std::thread([this] { StreamLoop(); });
  session_thread_ = std::thread([this] { SessionLoop(); });
  return absl::OkStatus();
}

void Agent::Shutdown() {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  bool started;
  {
    absl::MutexLock lock(&mu_);
    started = started_;
    stopping_ = true;
    registered_ = false;
    ++session_;
    CancelStreamLocked();
    if (session_context_ != nullptr) session_context_->TryCancel();
  }
  if (!started) {
    if (wake_fd_ >= 0) close(wake_fd_);
    wake_fd_ = -1;
    return;
  }
  SetReady(false);
  // No new assignments or heartbeats from here on.
  stream_thread_.join();
  session_thread_.join();
  // Stop the trainers; their final reports join the queue.
  Command shutdown;
  shutdown.kind = Command::Kind::kShutdown;
  Post(std::move(shutdown));
  supervisor_thread_.join();
  {
    absl::MutexLock lock(&report_mu_);
    reporter_stop_ = true;
    flush_deadline_ = absl::Now() + options_.shutdown_flush_timeout;
  }
  reporter_thread_.join();
  if (metrics_ != nullptr) metrics_->SetRegistered(false);
  close(wake_fd_);
  wake_fd_ = -1;
}

void Agent::Drain(absl::Duration timeout) {
  draining_ = true;
  Log(absl::StrCat("draining: trainers checkpoint at their next step and leave (at most ",
                   absl::FormatDuration(timeout), ")"));
  // Tell the coordinator now, before the trainers leave, so it restarts their jobs elsewhere
  // instead of back here (the regular heartbeats say so too, but up to an interval later).
  {
    v1::HeartbeatRequest beat;
    beat.set_worker_id(options_.worker_id);
    beat.set_draining(true);
    for (v1::RankStatus& rank : Ranks()) *beat.add_ranks() = std::move(rank);
    v1::HeartbeatResponse response;
    grpc::ClientContext context;
    context.set_deadline(Deadline(options_.rpc_timeout));
    const grpc::Status s = stub_->Heartbeat(&context, beat, &response);
    if (!s.ok()) Log(absl::StrCat("drain: could not tell the coordinator: ", s.error_message()));
  }
  Command drain;
  drain.kind = Command::Kind::kDrain;
  Post(std::move(drain));
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    bool live = false;
    for (const v1::RankStatus& r : Ranks()) {
      live |= r.state() == v1::RANK_STATE_STARTING || r.state() == v1::RANK_STATE_RUNNING;
    }
    if (!live) return;
    absl::SleepFor(absl::Milliseconds(50));
  }
  Log("drain: trainers still running at the deadline; stopping them");
}

std::vector<v1::RankStatus> Agent::Ranks() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::RankStatus> out;
  out.reserve(table_.size());
  for (const auto& [key, entry] : table_) out.push_back(entry.status);
  return out;
}

bool Agent::registered() const {
  absl::MutexLock lock(&mu_);
  return registered_;
}

// ---------------------------------------------------------------------------------------------
// Session: registration and heartbeats.

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
    }
    if (metrics_ != nullptr) {
      metrics_->SetRegistered(true);
      metrics_->HeartbeatSucceeded();
    }
    SetReady(true);
    Log(absl::StrCat("registered as ", options_.worker_id, " with the coordinator at ",
                     options_.coordinator, " (", options_.slots, " slots, heartbeat every ",
                     absl::FormatDuration(interval), ")"));

    bool lost = false;
    while (!lost) {
      if (SleepUnlessStopping(interval)) return;
      v1::HeartbeatRequest beat;
      beat.set_worker_id(options_.worker_id);
      beat.set_draining(draining_.load());
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
      if (code == grpc::StatusCode::NOT_FOUND || code == grpc::StatusCode::FAILED_PRECONDITION) {
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
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &Agent::StreamMayConnect));
      if (stopping_) return;
      session = session_;
      stream_context_ = &context;
    }
    v1::StreamAssignmentsRequest request;
    request.set_worker_id(options_.worker_id);
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

// ---------------------------------------------------------------------------------------------
// Supervisor.

void Agent::Post(Command command) {
  {
    absl::MutexLock lock(&command_mu_);
    commands_.push_back(std::move(command));
  }
  const uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) < 0) {
    // EAGAIN: the counter is saturated, so the supervisor is awake anyway.
  }
}

void Agent::SuperviseLoop() {
  std::vector<absl::Notification*> stop_all_waiters;
  bool shutting_down = false;
  std::vector<std::string> lines;
  for (;;) {
    // Wait for output, a command, or the next tick.
    std::vector<pollfd> fds;
    fds.push_back({wake_fd_, POLLIN, 0});
    for (const auto& [key, t] : trainers_) {
      if (t->process->output_open()) fds.push_back({t->process->output_fd(), POLLIN, 0});
    }
    poll(fds.data(), fds.size(),
         static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(options_.poll_interval))));
    uint64_t drained;
    while (read(wake_fd_, &drained, sizeof(drained)) > 0) {
    }

    std::deque<Command> commands;
    {
      absl::MutexLock lock(&command_mu_);
      commands.swap(commands_);
    }
    for (Command& command : commands) HandleCommand(command, &stop_all_waiters, &shutting_down);

    const absl::Time now = absl::Now();
    int starting = 0, running = 0;
    for (auto it = trainers_.begin(); it != trainers_.end();) {
      Trainer& t = *it->second;
      if (t.stop_requested && !t.sigkilled && now >= t.kill_at) {
        Log(absl::StrCat(KeyName(std::get<0>(t.key), std::get<1>(t.key), std::get<2>(t.key)),
                         " did not stop within ", absl::FormatDuration(options_.stop_grace),
                         ": SIGKILL"));
        t.process->SignalGroup(SIGKILL);
        t.sigkilled = true;
      }
      lines.clear();
      t.process->ReadOutput(&lines);
      AddOutput(t, lines, now);
      if (now - t.last_flush >= options_.report_interval ||
          static_cast<int>(t.pending.size()) >= options_.report_max_lines) {
        Flush(t, now);
      }
      if (t.process->PollExit().has_value()) {
        Finish(t, now);
        it = trainers_.erase(it);
        continue;
      }
      (t.state == v1::RANK_STATE_STARTING ? starting : running)++;
      ++it;
    }
    if (!deferred_.empty()) StartDeferred();
    if (metrics_ != nullptr) metrics_->SetRanks(starting, running);
    if (trainers_.empty()) {
      for (absl::Notification* n : stop_all_waiters) n->Notify();
      stop_all_waiters.clear();
      if (shutting_down) break;
    }
  }
}

void Agent::HandleCommand(Command& command, std::vector<absl::Notification*>* stop_all_waiters,
                          bool* shutting_down) {
  switch (command.kind) {
    case Command::Kind::kShutdown:
      *shutting_down = true;
      for (auto& [key, t] : trainers_) RequestStop(*t, "the worker agent is shutting down");
      CancelDeferred(nullptr, "the worker agent is shutting down");
      return;
    case Command::Kind::kDrain:
      for (auto& [key, t] : trainers_) {
        if (!t->stop_requested) t->process->SignalGroup(SIGUSR1);
      }
      CancelDeferred(nullptr, "the worker is draining");
      return;
    case Command::Kind::kStopAll:
      for (auto& [key, t] : trainers_) RequestStop(*t, command.reason);
      CancelDeferred(nullptr, command.reason);
      stop_all_waiters->push_back(command.done);
      return;
    case Command::Kind::kAssignment:
      break;
  }
  {
    absl::MutexLock lock(&mu_);
    // Read before the registration it belongs to ended: the coordinator has given it up.
    if (stopping_ || command.session != session_) return;
  }
  if (*shutting_down) return;
  const v1::Assignment& a = command.assignment;
  switch (a.kind()) {
    case v1::ASSIGNMENT_KIND_START:
      HandleStart(a);
      return;
    case v1::ASSIGNMENT_KIND_STOP: {
      std::string reason = "STOP from the coordinator";
      if (!a.reason().empty()) absl::StrAppend(&reason, " (", a.reason(), ")");
      int stopped = 0;
      for (auto& [key, t] : trainers_) {
        if (std::get<0>(key) == a.job_id() && std::get<1>(key) == a.attempt()) {
          RequestStop(*t, reason);
          ++stopped;
        }
      }
      CancelDeferred(
          [&](const v1::Assignment& d) {
            return d.job_id() == a.job_id() && d.attempt() == a.attempt();
          },
          reason);
      if (stopped > 0) {
        Log(absl::StrCat("stopping ", stopped, " rank(s) of job ", a.job_id(), " attempt ",
                         a.attempt(), ": ", reason));
      }
      return;
    }
    default:
      Log(absl::StrCat("ignoring an assignment of unknown kind ", static_cast<int>(a.kind()),
                       " for job ", a.job_id()));
      return;
  }
}

void Agent::HandleStart(const v1::Assignment& a) {
  const RankKey key{a.job_id(), a.attempt(), a.rank()};
  if (trainers_.count(key) > 0 || finished_.count(key) > 0) return;  // already runs (or ran)
  for (const v1::Assignment& d : deferred_) {
    if (d.job_id() == a.job_id() && d.attempt() == a.attempt() && d.rank() == a.rank()) return;
  }
  const auto refuse = [&](const std::string& message) {
    EndUnstarted(a, v1::RANK_STATE_FAILED, message);
  };
  if (!IsValidWorkerId(a.job_id())) {
    return refuse(absl::StrCat("invalid job_id '", a.job_id(), "'"));
  }
  if (a.attempt() < 0 || a.world_size() < 1 || a.rank() < 0 || a.rank() >= a.world_size()) {
    return refuse(absl::StrCat("invalid assignment: attempt ", a.attempt(), ", rank ", a.rank(),
                               ", world_size ", a.world_size()));
  }
  if (a.slot() < 0 || a.slot() >= options_.slots) {
    return refuse(absl::StrCat("slot ", a.slot(), " is outside this worker's slots [0, ",
                               options_.slots, ")"));
  }
  if (const Trainer* owner = slot_owner_[static_cast<size_t>(a.slot())]; owner != nullptr) {
    const std::string holder =
        KeyName(std::get<0>(owner->key), std::get<1>(owner->key), std::get<2>(owner->key));
    if (owner->stop_requested) {
      Log(absl::StrCat(KeyName(a.job_id(), a.attempt(), a.rank()), " waits for slot ", a.slot(),
                       ", where ", holder, " is stopping"));
      deferred_.push_back(a);
      return;
    }
    return refuse(absl::StrCat("slot ", a.slot(), " is busy with ", holder));
  }
  const std::string dir = absl::StrCat(options_.work_dir, "/jobs/", a.job_id(), "/attempt-",
                                       a.attempt(), "/rank-", a.rank());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return refuse(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  const absl::Status written =
      env::WriteFileAtomically(env::PosixEnv::Default(), dir + "/job.json", a.spec_json());
  if (!written.ok()) return refuse(std::string(written.message()));
  const std::string metrics_path = dir + "/metrics.jsonl";
  std::filesystem::remove(metrics_path, ec);  // a stale file must not be relayed as new steps

  SpawnSpec spec;
  spec.cwd = dir;
  spec.argv = {options_.trainer,
               "train",
               dir + "/job.json",
               "--rank",
               absl::StrCat(a.rank()),
               "--world",
               absl::StrCat(a.world_size()),
               "--store",
               absl::StrCat("grpc://", options_.coordinator),
               "--store-prefix",
               a.store_prefix(),
               "--job-id",
               a.job_id(),
               "--attempt",
               absl::StrCat(a.attempt()),
               "--catalog",
               options_.coordinator,
               "--threads",
               absl::StrCat(threads_per_trainer_)};
  if (a.rank() == 0) {
    spec.argv.push_back("--metrics-out");
    spec.argv.push_back(metrics_path);
  }
  auto process = TrainerProcess::Spawn(spec);
  if (!process.ok()) return refuse(std::string(process.status().message()));

  auto t = std::make_unique<Trainer>();
  t->key = key;
  t->assignment = a;
  t->assignment.clear_spec_json();  // kept on disk, not in memory
  t->dir = dir;
  t->process = std::move(*process);
  if (a.rank() == 0) {
    t->tail = std::make_unique<MetricsTail>(metrics_path);
    t->parser = std::make_unique<StepMetricsParser>(a.attempt());
  }
  t->last_flush = absl::Now();
  slot_owner_[static_cast<size_t>(a.slot())] = t.get();
  SetTableState(key, a.slot(), v1::RANK_STATE_STARTING, &t->table_generation);
  Log(absl::StrCat("started ", KeyName(a.job_id(), a.attempt(), a.rank()), " (world ",
                   a.world_size(), ") in slot ", a.slot(), " as pid ", t->process->pid()));
  Report report;
  report.request = NewReport(*t);
  report.key = key;
  Enqueue(std::move(report));
  trainers_.emplace(key, std::move(t));
}

void Agent::EndUnstarted(const v1::Assignment& a, v1::RankState state, const std::string& message) {
  const RankKey key{a.job_id(), a.attempt(), a.rank()};
  Log(absl::StrCat(state == v1::RANK_STATE_FAILED ? "refusing " : "dropping ",
                   KeyName(a.job_id(), a.attempt(), a.rank()), ": ", message));
  Report report;
  report.request.set_worker_id(options_.worker_id);
  report.request.set_job_id(a.job_id());
  report.request.set_attempt(a.attempt());
  report.request.set_rank(a.rank());
  report.request.set_state(state);
  report.request.set_message(message);
  report.final = true;
  report.key = key;
  SetTableState(key, a.slot(), state, &report.table_generation);
  RememberFinished(key);
  Enqueue(std::move(report));
}

void Agent::StartDeferred() {
  std::deque<v1::Assignment> waiting;
  waiting.swap(deferred_);
  for (v1::Assignment& a : waiting) {
    const Trainer* owner = slot_owner_[static_cast<size_t>(a.slot())];
    if (owner != nullptr && owner->stop_requested) {
      deferred_.push_back(std::move(a));  // still going
    } else {
      HandleStart(a);  // starts it, or refuses it when another rank took the slot meanwhile
    }
  }
}

void Agent::CancelDeferred(const std::function<bool(const v1::Assignment&)>& match,
                           const std::string& reason) {
  std::deque<v1::Assignment> keep;
  for (v1::Assignment& a : deferred_) {
    if (!match || match(a)) {
      EndUnstarted(a, v1::RANK_STATE_KILLED, absl::StrCat("stopped before it started: ", reason));
    } else {
      keep.push_back(std::move(a));
    }
  }
  deferred_.swap(keep);
}

void Agent::RequestStop(Trainer& t, const std::string& reason) {
  if (t.stop_requested) return;
  t.stop_requested = true;
  t.stop_reason = reason;
  t.kill_at = absl::Now() + options_.stop_grace;
  t.process->SignalGroup(SIGTERM);
}

v1::ReportStatusRequest Agent::NewReport(const Trainer& t) const {
  v1::ReportStatusRequest r;
  r.set_worker_id(options_.worker_id);
  r.set_job_id(t.assignment.job_id());
  r.set_attempt(t.assignment.attempt());
  r.set_rank(t.assignment.rank());
  r.set_state(t.state);
  return r;
}

void Agent::SetTableState(const RankKey& key, int32_t slot, v1::RankState state,
                          uint64_t* generation) {
  absl::MutexLock lock(&mu_);
  TableEntry& entry = table_[key];
  if (entry.generation == 0 || state == v1::RANK_STATE_STARTING) {
    entry.generation = next_generation_++;
  }
  entry.status.set_job_id(std::get<0>(key));
  entry.status.set_attempt(std::get<1>(key));
  entry.status.set_rank(std::get<2>(key));
  entry.status.set_slot(slot);
  entry.status.set_state(state);
  *generation = entry.generation;
}

void Agent::RememberFinished(const RankKey& key) {
  if (!finished_.insert(key).second) return;
  finished_order_.push_back(key);
  while (finished_order_.size() > kMaxFinished) {
    finished_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
}

void Agent::AddOutput(Trainer& t, const std::vector<std::string>& lines, absl::Time now) {
  if (lines.empty()) return;
  const google::protobuf::Timestamp time = ToTimestamp(now);
  for (const std::string& text : lines) {
    v1::LogLine& line = t.pending.emplace_back();
    line.set_rank(t.assignment.rank());
    *line.mutable_time() = time;
    line.set_text(text);
    t.last_lines.push_back(text.size() > kMaxQuotedLine ? text.substr(0, kMaxQuotedLine) : text);
    while (static_cast<int>(t.last_lines.size()) > options_.tail_lines) t.last_lines.pop_front();
  }
  if (t.state == v1::RANK_STATE_STARTING) {
    t.state = v1::RANK_STATE_RUNNING;
    t.transition_pending = true;
    SetTableState(t.key, t.assignment.slot(), t.state, &t.table_generation);
  }
}

void Agent::Flush(Trainer& t, absl::Time now) {
  t.last_flush = now;
  // Output first: a step's metrics line is written before the trainer prints the step.
  size_t sent = 0;
  while (sent < t.pending.size()) {
    const size_t n = std::min(t.pending.size() - sent,
                              static_cast<size_t>(std::max(1, options_.report_max_lines)));
    Report report;
    report.request = NewReport(t);
    for (size_t i = 0; i < n; ++i) *report.request.add_log_lines() = std::move(t.pending[sent + i]);
    report.droppable = !t.transition_pending;
    t.transition_pending = false;
    report.key = t.key;
    Enqueue(std::move(report));
    sent += n;
  }
  t.pending.clear();
  if (t.tail == nullptr) return;
  std::vector<std::string> lines;
  if (absl::Status s = t.tail->Poll(&lines); !s.ok() && !t.bad_metrics_logged) {
    Log(std::string(s.message()));
    t.bad_metrics_logged = true;
  }
  for (const std::string& line : lines) {
    auto parsed = t.parser->Parse(line, now);
    if (!parsed.ok()) {
      if (!t.bad_metrics_logged) Log(std::string(parsed.status().message()));
      t.bad_metrics_logged = true;
      continue;
    }
    if (t.state == v1::RANK_STATE_STARTING) {
      t.state = v1::RANK_STATE_RUNNING;
      t.transition_pending = true;
      SetTableState(t.key, t.assignment.slot(), t.state, &t.table_generation);
    }
    if (metrics_ != nullptr) {
      metrics_->ObserveStep(t.assignment.slot(), parsed->metrics, parsed->skipped_increment);
    }
    Report report;
    report.request = NewReport(t);
    *report.request.mutable_metrics() = std::move(parsed->metrics);
    report.droppable = !t.transition_pending;
    t.transition_pending = false;
    report.key = t.key;
    Enqueue(std::move(report));
  }
}

void Agent::Finish(Trainer& t, absl::Time now) {
  const ExitInfo exit = *t.process->PollExit();
  std::vector<std::string> lines;
  t.process->DrainOutput(&lines, kDrainMs);
  AddOutput(t, lines, now);
  Flush(t, now);

  v1::RankState final_state;
  std::string message;
  if (t.stop_requested) {
    final_state = v1::RANK_STATE_KILLED;
    message = absl::StrCat("stopped by the worker agent: ", t.stop_reason, "; ", exit.Describe());
  } else if (exit.success()) {
    final_state = v1::RANK_STATE_SUCCEEDED;
    message = exit.Describe();
  } else {
    final_state = v1::RANK_STATE_FAILED;
    message = exit.Describe();
  }
  if (final_state != v1::RANK_STATE_SUCCEEDED && !t.last_lines.empty()) {
    absl::StrAppend(&message, "; last output:\n", absl::StrJoin(t.last_lines, "\n"));
  }
  t.state = final_state;
  Report report;
  report.request = NewReport(t);
  report.request.set_exit_code(exit.signal == 0 ? exit.exit_code : 0);
  report.request.set_signal(exit.signal);
  report.request.set_message(message);
  report.final = true;
  report.key = t.key;
  SetTableState(t.key, t.assignment.slot(), final_state, &report.table_generation);
  // Counted before the final report is queued: whoever sees the report sees the exit in /metrics.
  if (metrics_ != nullptr) {
    metrics_->TrainerExited(final_state);
    if (t.tail != nullptr) metrics_->ClearTrainingGauges(t.assignment.slot());
  }
  Enqueue(std::move(report));

  Log(absl::StrCat(KeyName(t.assignment.job_id(), t.assignment.attempt(), t.assignment.rank()), " ",
                   StateName(final_state), ": ", exit.Describe()));
  slot_owner_[static_cast<size_t>(t.assignment.slot())] = nullptr;
  RememberFinished(t.key);
}

// ---------------------------------------------------------------------------------------------
// Reporter.

void Agent::Enqueue(Report report) {
  report.bytes = report.request.ByteSizeLong();
  absl::MutexLock lock(&report_mu_);
  queued_bytes_ += report.bytes;
  reports_.push_back(std::move(report));
  if (queued_bytes_ > options_.max_queued_bytes) EvictLocked();
  if (metrics_ != nullptr) metrics_->SetPendingReports(static_cast<int64_t>(reports_.size()));
}

void Agent::EvictLocked() {
  int64_t dropped_lines = 0;
  // Output-only reports first, then metrics-only ones; oldest first.
  for (bool with_metrics : {false, true}) {
    for (auto it = reports_.begin();
         it != reports_.end() && queued_bytes_ > options_.max_queued_bytes;) {
      if (it->droppable && it->request.has_metrics() == with_metrics) {
        dropped_lines += it->request.log_lines_size();
        queued_bytes_ -= it->bytes;
        it = reports_.erase(it);
      } else {
        ++it;
      }
    }
  }
  if (dropped_lines > 0 && metrics_ != nullptr) metrics_->DroppedLogLines(dropped_lines);
}

void Agent::ForgetFinal(const Report& report) {
  if (!report.final) return;
  absl::MutexLock lock(&mu_);
  const auto it = table_.find(report.key);
  if (it != table_.end() && it->second.generation == report.table_generation) table_.erase(it);
}

void Agent::ReportLoop() {
  retry::Backoff backoff(BackoffFor(options_));
  for (;;) {
    Report report;
    absl::Time deadline;
    {
      absl::MutexLock lock(&report_mu_);
      report_mu_.Await(absl::Condition(this, &Agent::ReporterHasWork));
      if (reports_.empty()) return;  // stopping, all delivered
      if (reporter_stop_ && absl::Now() >= flush_deadline_) {
        Log(absl::StrCat(reports_.size(), " status report(s) not delivered before shutdown"));
        return;
      }
      report = std::move(reports_.front());
      reports_.pop_front();
      queued_bytes_ -= report.bytes;
      deadline = std::min(absl::Now() + options_.rpc_timeout, flush_deadline_);
    }
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    v1::ReportStatusResponse response;
    const grpc::Status status = stub_->ReportStatus(&context, report.request, &response);
    if (status.ok()) {
      ForgetFinal(report);
      backoff.Reset();
      absl::MutexLock lock(&report_mu_);
      if (metrics_ != nullptr) metrics_->SetPendingReports(static_cast<int64_t>(reports_.size()));
      continue;
    }
    CoordinatorError("ReportStatus");
    ++report.attempts;
    const retry::ErrorClass error = retry::Classify(FromGrpcCode(status.error_code()));
    if (error == retry::ErrorClass::kPermanent ||
        (error == retry::ErrorClass::kStateful && report.attempts >= kMaxReportAttempts)) {
      Log(absl::StrCat(
          "dropping a ", StateName(report.request.state()), " report for ",
          KeyName(report.request.job_id(), report.request.attempt(), report.request.rank()), ": ",
          Describe(status)));
      ForgetFinal(report);
      continue;
    }
    const absl::Duration wait = backoff.Next();
    absl::Duration sleep = absl::ZeroDuration();
    {
      absl::MutexLock lock(&report_mu_);
      queued_bytes_ += report.bytes;
      reports_.push_front(std::move(report));
      if (!reporter_stop_) {
        // Wakes early when shutdown begins, to keep within the flush deadline.
        report_mu_.AwaitWithTimeout(absl::Condition(&reporter_stop_), wait);
      } else {
        sleep = std::min(wait, flush_deadline_ - absl::Now());
      }
    }
    if (sleep > absl::ZeroDuration()) absl::SleepFor(sleep);
  }
}

}  // namespace dstrain::agent
