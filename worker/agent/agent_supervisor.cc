// Agent: the supervisor thread. It takes the commands posted to it (assignments, stop-all,
// drain, shutdown), starts a trainer per START (or defers or refuses it), stops trainers on STOP,
// and polls the running ones: their output, their exit, the SIGKILL after stop_grace.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "worker/agent/agent.h"
#include "worker/agent/agent_config.h"
#include "worker/agent/agent_internal.h"
#include "worker/env/env.h"

namespace dstrain::agent {

using internal::KeyName;
using internal::Log;

namespace {

// Ranks remembered as finished, so a repeated START for them stays a no-op.
constexpr size_t kMaxFinished = 4096;

}  // namespace

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
  if (a.slot() < 0 || a.slot() >= TotalSlots()) {
    return refuse(
        absl::StrCat("slot ", a.slot(), " is outside this worker's slots [0, ", TotalSlots(), ")"));
  }
  // GPU slots come first (slot i is GPU i), the CPU slots after them.
  const bool on_gpu = a.slot() < static_cast<int>(options_.gpus.size());
  const v1::SlotKind kind = on_gpu ? v1::SLOT_KIND_GPU : v1::SLOT_KIND_CPU;
  if (a.slot_kind() != v1::SLOT_KIND_UNSPECIFIED && a.slot_kind() != kind) {
    return refuse(absl::StrCat(
        "slot ", a.slot(), " is a ", on_gpu ? "GPU" : "CPU", " slot of this worker (",
        options_.gpus.size(), " GPU slot(s) first, then ", options_.slots,
        " CPU slot(s)), but the assignment is for a ", on_gpu ? "CPU" : "GPU", " slot"));
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
               absl::StrCat(threads_per_trainer_),
               "--device",
               on_gpu ? "cuda" : "cpu"};
  if (!options_.data_root.empty()) {
    spec.argv.push_back("--data-root");
    spec.argv.push_back(options_.data_root);
  }
  if (!options_.bind_address.empty()) {
    spec.argv.push_back("--bind-address");
    spec.argv.push_back(options_.bind_address);
  }
  // The rank sees its own GPU alone, as device 0; a CPU rank sees none, so it never takes one.
  const std::string visible = on_gpu ? options_.gpus[static_cast<size_t>(a.slot())].visible_id : "";
  // The store token stays off the command line, which other users of the host can read.
  spec.env = {{"CUDA_VISIBLE_DEVICES", visible}, {"DSTRAIN_STORE_TOKEN", a.store_token()}};
  // The trainer reaches the store and the catalog as this worker (its certificate), never with
  // settings of its own: every TLS variable is set, empty where the worker has none.
  std::map<std::string, std::string> tls_env = tls::ToEnvironment(options_.tls);
  for (const char* name :
       {"DSTRAIN_INSECURE", "DSTRAIN_TLS_CA", "DSTRAIN_TLS_CERT", "DSTRAIN_TLS_KEY"}) {
    spec.env.emplace_back(name, tls_env[name]);
  }
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
                   a.world_size(), ") in ", on_gpu ? "GPU" : "CPU", " slot ", a.slot(),
                   " (CUDA_VISIBLE_DEVICES=", visible, ") as pid ", t->process->pid()));
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

}  // namespace dstrain::agent
