// Agent: the worker agent behind `dstrain-worker` (torchelastic's agent model; docs/service.md,
// "Worker agent").
//
// It registers the worker with the coordinator's WorkerService, keeps the lease with heartbeats,
// follows its assignment stream, and runs one trainer process per assigned rank. A trainer that
// crashes, aborts or is killed ends only itself: the agent reports how it ended and frees its slot.
//
// Threads (all owned; Start creates them, Shutdown joins them):
//   session     RegisterWorker, then Heartbeat every heartbeat_interval (from the response) with
//               the state of every rank. Coordinator unreachable: retry with capped exponential
//               backoff, forever; trainers keep running. Heartbeat NOT_FOUND or
//               FAILED_PRECONDITION (the coordinator forgot the worker or declared it LOST, so its
//               ranks were given up): stop every trainer, report them KILLED, register again.
//   stream      StreamAssignments while registered; reconnects with backoff when the stream ends
//               or fails, and after each new registration. Assignments go to the supervisor.
//   supervisor  spawns and watches the trainers in one poll loop: relays their output, follows
//               rank 0's metrics file, stops them (SIGTERM to the process group, SIGKILL after
//               stop_grace) and reaps them. Trainers are children of this thread (see
//               TrainerProcess): they die with the agent.
//   reporter    sends ReportStatus calls one at a time, in the order they were made, retrying
//               failed ones (see "Reports" below).
//
// Slots: GPU slots 0..G-1, one per GPU of options.gpus (slot i is GPU i), then CPU slots
// G..G+slots-1. Registration carries both (RegisterWorkerRequest.gpus and cpu_slots).
//
// Assignments:
//   START{job_id, attempt, rank, world_size, slot, slot_kind, spec_json, store_prefix}: a no-op
//   when this agent already runs (or already ran) that (job_id, attempt, rank). Refused with a
//   FAILED report whose message says why when the slot is outside [0, G + slots) or busy, its
//   slot_kind is not the slot's kind (unset is taken as the slot's), or the ids are invalid.
//   A START for a slot whose trainer is being stopped (the coordinator sent STOP for the old
//   attempt, then placed a new rank there) waits until that trainer is gone (at most stop_grace
//   and a moment), then starts; a STOP for its attempt meanwhile ends it as KILLED unstarted.
//   Else the agent makes DIR = <work_dir>/jobs/<job_id>/attempt-<attempt>/rank-<rank>/, writes
//   spec_json unchanged to DIR/job.json, removes a stale DIR/metrics.jsonl, and runs (cwd DIR,
//   own process group, stdin /dev/null, stdout and stderr into one pipe):
//     <trainer> train DIR/job.json --rank R --world N --store grpc://<coordinator>
//         --store-prefix <store_prefix> --job-id <job_id> --attempt <attempt>
//         --catalog <coordinator> --threads T --device cuda|cpu [--metrics-out DIR/metrics.jsonl]
//   with T = max(1, CPUs / (G + slots)) and --metrics-out for rank 0 only. A rank in GPU slot i
//   gets --device cuda and CUDA_VISIBLE_DEVICES set to GPU i's visible id (GpuSlot), so it sees
//   that GPU alone, as its device 0; a rank in a CPU slot gets --device cpu and an empty
//   CUDA_VISIBLE_DEVICES, so it never takes a GPU.
//   STOP{job_id, attempt}: stops every rank of that attempt on this worker (Assignment.rank is not
//   consulted: the coordinator stops gangs); each is reported KILLED (whatever its exit status)
//   once it is gone.
//
// Reports (ReportStatus, per rank, in this order):
//   STARTING once spawned; RUNNING with its output lines (batched every report_interval or
//   report_max_lines) and with each rank-0 metrics line (one report per step, StepMetrics filled
//   from the JSONL, see StepMetricsParser); then exactly one final report: SUCCEEDED (exit 0),
//   FAILED (exit_code, or signal when a signal the agent did not send ended it; the message holds
//   the last tail_lines output lines), or KILLED (stopped by the agent). Reports wait in one FIFO
//   queue while the coordinator is unreachable. Failures are classified by common/retry: transient
//   ones (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, CANCELLED) are retried without limit, stateful
//   ones (NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, INTERNAL, ...) up to
//   kMaxReportAttempts times, and permanent ones (INVALID_ARGUMENT, UNIMPLEMENTED, ...) drop the
//   report at once. Over max_queued_bytes the oldest output-only reports
//   are dropped first; state changes and final reports never are. A finished rank stays in the
//   heartbeats (with its final state) until its final report is delivered or dropped.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/tls/tls.h"
#include "proto/worker.grpc.pb.h"
#include "proto/worker.pb.h"
#include "worker/agent/agent_metrics.h"
#include "worker/agent/gpu_inventory.h"

namespace grpc {
class ClientContext;
}

namespace dstrain::agent {

// The agent's version, sent with RegisterWorker.
inline constexpr char kAgentVersion[] = "0.1.0";

// Tries for a report failing with a stateful code (retry::ErrorClass::kStateful: NOT_FOUND,
// FAILED_PRECONDITION, RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN, DATA_LOSS): enough to outlast a
// re-registration.
inline constexpr int kMaxReportAttempts = 10;

struct AgentOptions {
  // The coordinator, HOST:PORT.
  std::string coordinator;
  // Must match [a-z][a-z0-9-]{0,62}.
  std::string worker_id;
  std::string hostname;
  // CPU ranks this worker runs at once: CPU slots, numbered after the GPU slots. 0 on a worker
  // with GPU slots only.
  int slots = 1;
  // GPU slots 0..gpus.size()-1: GPU i is slot i (gpus[i].info.index() == i).
  std::vector<GpuSlot> gpus;
  // Absolute; trainers run in <work_dir>/jobs/<job_id>/attempt-<a>/rank-<r>/.
  std::string work_dir;
  // Passed to every trainer as --data-root (the job's paths must resolve beneath it); empty: none
  // (tests with a fake trainer; a real trainer under an agent refuses to run without one).
  std::string data_root;
  // The coordinator connection's TLS (the worker's certificate, the CA), also handed to every
  // trainer in its environment (tls::ToEnvironment) for the store and the checkpoint catalog.
  tls::TlsConfig tls = {.insecure = true};
  // The trainer executable (absolute path).
  std::string trainer;
  // Passed to every trainer as --bind-address (this host's address the other hosts reach);
  // empty: the trainers' default (127.0.0.1, one host).
  std::string bind_address;
  // HOST:PORT of this worker's /metrics, sent with RegisterWorker.
  std::string metrics_address;
  std::string version = kAgentVersion;
  // CPUs shared by the slots (GPU and CPU slots alike); 0: this process's CPU affinity.
  int cpus = 0;

  // SIGTERM to SIGKILL when stopping a trainer.
  absl::Duration stop_grace = absl::Seconds(5);
  // Output lines are sent at least this often, or when report_max_lines have gathered.
  absl::Duration report_interval = absl::Milliseconds(200);
  int report_max_lines = 200;
  // Output lines quoted in a FAILED or KILLED report's message.
  int tail_lines = 20;
  // Deadline of each unary call to the coordinator.
  absl::Duration rpc_timeout = absl::Seconds(5);
  // Retry backoff for every call to the coordinator (retry::Backoff: doubling from initial, capped
  // at max, with jitter); also the channel's reconnect backoff.
  absl::Duration backoff_initial = absl::Milliseconds(100);
  absl::Duration backoff_max = absl::Seconds(5);
  // Used when RegisterWorkerResponse leaves heartbeat_interval unset.
  absl::Duration default_heartbeat_interval = absl::Seconds(2);
  // Longest wait of the supervisor's poll loop.
  absl::Duration poll_interval = absl::Milliseconds(50);
  // At shutdown, how long queued reports may still be sent after the trainers are gone.
  absl::Duration shutdown_flush_timeout = absl::Seconds(5);
  // Bound on queued reports (serialized bytes).
  size_t max_queued_bytes = 64 << 20;
};

class Agent {
 public:
  // `metrics` (may be null) must outlive the agent. `on_ready` (may be empty) is called with true
  // when the agent is registered and its heartbeats succeed, false when that stops (health).
  Agent(AgentOptions options, AgentMetrics* metrics, std::function<void(bool)> on_ready);
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;
  ~Agent();  // Shutdown()

  // Checks the options, creates <work_dir>/jobs and starts the threads; does not wait for the
  // coordinator. INVALID_ARGUMENT for bad options, INTERNAL when the work directory cannot be
  // made. Call once.
  absl::Status Start();

  // Stops following the coordinator, stops every trainer (SIGTERM, SIGKILL after stop_grace),
  // sends the queued reports for up to shutdown_flush_timeout, and joins the threads. Idempotent.
  void Shutdown();
  // Graceful drain (SIGTERM: the machine is going away): tells the coordinator this worker is
  // draining (it places nothing new here), asks every trainer to checkpoint at its next step
  // boundary and leave (SIGUSR1; it exits with kExitDrained and its job restarts elsewhere
  // without losing steps), and waits up to `timeout` for them to go. Shutdown() afterwards stops
  // whatever is left.
  void Drain(absl::Duration timeout);

  // The ranks the next heartbeat reports: running ones, and finished ones whose final report is
  // not delivered yet. Ordered by (job_id, attempt, rank).
  std::vector<v1::RankStatus> Ranks() const;
  bool registered() const;

 private:
  using RankKey = std::tuple<std::string, int32_t, int32_t>;  // job_id, attempt, rank
  struct Trainer;
  struct Command {
    enum class Kind { kAssignment, kStopAll, kShutdown, kDrain };
    Kind kind = Kind::kAssignment;
    v1::Assignment assignment;
    uint64_t session = 0;                // kAssignment: the session it arrived in
    std::string reason;                  // kStopAll
    absl::Notification* done = nullptr;  // kStopAll: notified once no trainer is left
  };
  struct Report {
    v1::ReportStatusRequest request;
    bool droppable = false;  // output or metrics only, no state change
    bool final = false;      // the rank's last report
    RankKey key;
    uint64_t table_generation = 0;
    size_t bytes = 0;
    int attempts = 0;
  };
  struct TableEntry {
    v1::RankStatus status;
    uint64_t generation = 0;
  };

  // Threads.
  void SessionLoop();
  void StreamLoop();
  void SuperviseLoop();
  void ReportLoop();

  // GPU slots and CPU slots together.
  int TotalSlots() const { return static_cast<int>(options_.gpus.size()) + options_.slots; }

  // Session helpers.
  bool Stopping() const;
  // Sleeps `d` unless shutdown begins; true when it did.
  bool SleepUnlessStopping(absl::Duration d);
  bool StreamMayConnect() const ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || registered_; }
  void CancelStreamLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetReady(bool ready);
  void StopAllTrainers(const std::string& reason);
  void CoordinatorError(const char* rpc);
  // Records the session thread's call in flight (nullptr: none), so Shutdown can cancel it; false
  // when shutdown already began.
  bool TrackSessionCall(grpc::ClientContext* context);

  // Supervisor helpers (supervisor thread only).
  void Post(Command command);
  void HandleCommand(Command& command, std::vector<absl::Notification*>* stop_all_waiters,
                     bool* shutting_down);
  void HandleStart(const v1::Assignment& a);
  // Ends a START that never ran: a final report in `state` (FAILED: refused; KILLED: stopped
  // while it waited for its slot) with `message`.
  void EndUnstarted(const v1::Assignment& a, v1::RankState state, const std::string& message);
  // Starts the deferred STARTs whose slot is free now.
  void StartDeferred();
  // Ends the deferred STARTs that `match` (all when it is empty) as KILLED.
  void CancelDeferred(const std::function<bool(const v1::Assignment&)>& match,
                      const std::string& reason);
  void RequestStop(Trainer& t, const std::string& reason);
  void AddOutput(Trainer& t, const std::vector<std::string>& lines, absl::Time now);
  void Flush(Trainer& t, absl::Time now);
  void Finish(Trainer& t, absl::Time now);
  v1::ReportStatusRequest NewReport(const Trainer& t) const;
  void SetTableState(const RankKey& key, int32_t slot, v1::RankState state, uint64_t* generation);
  void RememberFinished(const RankKey& key);

  // Reporter helpers.
  void Enqueue(Report report);
  void EvictLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(report_mu_);
  void ForgetFinal(const Report& report);
  bool ReporterHasWork() const ABSL_SHARED_LOCKS_REQUIRED(report_mu_) {
    return !reports_.empty() || reporter_stop_;
  }

  const AgentOptions options_;
  AgentMetrics* const metrics_;
  const std::function<void(bool)> on_ready_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  int threads_per_trainer_ = 1;

  // Session state, heartbeat table.
  mutable absl::Mutex mu_;
  std::atomic<bool> draining_{false};
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
  // +1 at every registration and every loss of one: assignments read in an older session are
  // dropped.
  uint64_t session_ ABSL_GUARDED_BY(mu_) = 0;
  // The current registration's RegisterWorkerResponse.session_token, sent with every call.
  std::string session_token_ ABSL_GUARDED_BY(mu_);
  // session_token_, for the calls that must carry it (Heartbeat, the drain's, ReportStatus).
  std::string SessionToken() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return session_token_;
  }
  grpc::ClientContext* stream_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  grpc::ClientContext* session_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::map<RankKey, TableEntry> table_ ABSL_GUARDED_BY(mu_);
  uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;

  // Commands to the supervisor; wake_fd_ (an eventfd) interrupts its poll.
  absl::Mutex command_mu_;
  std::deque<Command> commands_ ABSL_GUARDED_BY(command_mu_);
  int wake_fd_ = -1;

  // Supervisor-only state.
  std::map<RankKey, std::unique_ptr<Trainer>> trainers_;
  std::vector<const Trainer*> slot_owner_;  // by slot; nullptr when free
  std::set<RankKey> finished_;
  std::deque<RankKey> finished_order_;
  // STARTs waiting for a slot whose trainer is being stopped, in arrival order.
  std::deque<v1::Assignment> deferred_;

  // What on_ready_ was last told.
  absl::Mutex ready_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  bool ready_ ABSL_GUARDED_BY(ready_mu_) = false;

  // Report queue.
  absl::Mutex report_mu_;
  std::deque<Report> reports_ ABSL_GUARDED_BY(report_mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(report_mu_) = 0;
  bool reporter_stop_ ABSL_GUARDED_BY(report_mu_) = false;
  absl::Time flush_deadline_ ABSL_GUARDED_BY(report_mu_) = absl::InfiniteFuture();

  std::thread session_thread_, stream_thread_, supervisor_thread_, reporter_thread_;
  absl::Mutex shutdown_mu_;  // serialises Shutdown
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace dstrain::agent
