// Agent: the options check, the threads' start, Shutdown and Drain, and the helpers the other
// files share (agent_internal.h).
#include "worker/agent/agent.h"

#include <grpcpp/grpcpp.h>
#include <sched.h>
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
#include "absl/time/clock.h"
#include "common/grpc/grpc_status.h"
#include "worker/agent/agent_config.h"
#include "worker/agent/agent_internal.h"

namespace dstrain::agent {
namespace internal {

void Log(const std::string& message) {
  absl::FPrintF(stderr, "dstrain-worker: %s\n", message);
  std::fflush(stderr);
}

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

retry::BackoffOptions BackoffFor(const AgentOptions& options) {
  retry::BackoffOptions backoff;
  backoff.initial = options.backoff_initial;
  backoff.max = options.backoff_max;
  return backoff;
}

}  // namespace internal

using internal::Deadline;
using internal::Log;

namespace {

int CpuCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  return sched_getaffinity(0, sizeof(set), &set) == 0 ? std::max(1, CPU_COUNT(&set)) : 1;
}

}  // namespace

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
  if (options_.slots < 0) return absl::InvalidArgumentError("slots must be >= 0");
  if (TotalSlots() < 1) {
    return absl::InvalidArgumentError("no slots: slots is 0 and there are no GPUs");
  }
  for (size_t i = 0; i < options_.gpus.size(); ++i) {
    if (options_.gpus[i].info.index() != static_cast<int>(i)) {
      return absl::InvalidArgumentError(
          absl::StrCat("gpus[", i, "] has index ", options_.gpus[i].info.index(), ", not ", i));
    }
  }
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
  auto credentials = tls::ChannelCredentials(options_.tls);
  if (!credentials.ok()) return credentials.status();
  stub_ = v1::WorkerService::NewStub(
      grpc::CreateCustomChannel(options_.coordinator, *credentials, args));

  const int cpus = options_.cpus > 0 ? options_.cpus : CpuCount();
  // A trainer on a GPU still runs its data loading and host-side work on CPUs: every slot gets
  // an equal share.
  threads_per_trainer_ = std::max(1, cpus / TotalSlots());
  slot_owner_.assign(static_cast<size_t>(TotalSlots()), nullptr);
  if (metrics_ != nullptr) {
    metrics_->SetSlots(options_.slots);
    metrics_->SetGpus(static_cast<int>(options_.gpus.size()));
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
    beat.set_session_token(SessionToken());
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

}  // namespace dstrain::agent
