// The worker agent's Prometheus metrics (docs/service.md, "Metrics and health"): the `dstrain_`
// prefix, base units, counters ending in _total, HELP on every family, bounded labels only
// (state, result, rpc, slot, category, stage).
//
// clang-format off
// The worker's own:
//   dstrain_worker_slots                          gauge      CPU trainer slots (--slots)
//   dstrain_worker_gpus                           gauge      GPU slots, one per GPU (--gpus)
//   dstrain_worker_registered                     gauge      1 while registered with the
//                                                            coordinator, else 0
//   dstrain_worker_ranks{state}                   gauge      trainers by state: starting, running
//   dstrain_worker_trainer_exits_total{result}    counter    trainers that ended, by result:
//                                                            succeeded, failed, killed
//   dstrain_worker_coordinator_errors_total{rpc}  counter    failed calls, by WorkerService RPC
//   dstrain_worker_heartbeat_age_seconds          gauge      since the last successful heartbeat
//                                                            or registration (before either:
//                                                            since the agent started)
//   dstrain_worker_pending_reports                gauge      ReportStatus calls not yet delivered
//   dstrain_worker_dropped_log_lines_total        counter    output lines dropped from a full
//                                                            report queue
// From rank 0's metrics, labelled by the slot the rank runs in:
//   dstrain_train_loss, dstrain_train_grad_norm, dstrain_train_loss_scale,
//   dstrain_train_learning_rate, dstrain_train_tokens_per_second
//                                                 gauges     the last step's values
//   dstrain_train_memory_bytes{category}          gauge      bytes allocated, by category
//   dstrain_train_step_seconds                    histogram  wall time of optimizer steps
//   dstrain_train_skipped_steps_total             counter    steps skipped (overflow or NaN)
//   dstrain_train_steps_total                     counter    metrics lines relayed
//   dstrain_train_comm_bytes_total                counter    bytes sent in collectives and
//                                                            transfers
//   dstrain_train_comm_wait_seconds_total         counter    time blocked on collectives
//   dstrain_checkpoint_save_duration_seconds      histogram  wall time of checkpoint saves
//   dstrain_checkpoint_bytes_total                counter    bytes of committed checkpoints
//   dstrain_train_pipeline_bubble_fraction{stage}, dstrain_train_pipeline_compute_seconds{stage},
//   dstrain_train_pipeline_p2p_sent_bytes{stage}, dstrain_train_pipeline_memory_peak_bytes{stage}
//                                                 gauges     a pipelined job's stages: the last
//                                                            step's bubble, forward and backward
//                                                            time and memory peak; bytes sent to
//                                                            the neighbours in this run
//   dstrain_worker_device_memory_bytes{state}     gauge      the trainer's device memory:
//                                                            in_use after the last step, peak
//                                                            so far; only from lines that carry
//                                                            it (a trainer on a GPU)
//   dstrain_train_nvme_bytes                      gauge      bytes of optimizer state in swap
//                                                            files (NVMe offload); only from
//                                                            lines that carry it
//   dstrain_train_swap_wait_seconds_total         counter    time the optimizer step waited for
//                                                            swap I/O (not hidden by compute)
// clang-format on
// The gauges of a slot are removed when its rank-0 trainer ends (no stale loss after a job);
// counters and the histograms keep their totals.
//
// Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock/clock.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "proto/common.pb.h"
#include "proto/worker.pb.h"

namespace prometheus {
class Exposer;
}

namespace dstrain::agent {

// The WorkerService RPCs counted by dstrain_worker_coordinator_errors_total.
inline constexpr const char* kCoordinatorRpcs[] = {"RegisterWorker", "Heartbeat",
                                                   "StreamAssignments", "ReportStatus"};

class AgentMetrics {
 public:
  // `clock` (not owned) dates heartbeats; it must outlive this object.
  explicit AgentMetrics(const Clock* clock = RealClock::Default());
  ~AgentMetrics();

  // What an Exposer serves: refreshes the heartbeat age, then collects every family.
  std::shared_ptr<prometheus::Collectable> collectable() const { return collectable_; }
  // The text exposition format of everything (what a scrape returns).
  std::string Serialize() const;

  void SetSlots(int slots);
  void SetGpus(int gpus);
  void SetRegistered(bool registered);
  void SetRanks(int starting, int running);
  // `final_state` is SUCCEEDED, FAILED or KILLED; other states are ignored.
  void TrainerExited(v1::RankState final_state);
  // `rpc` is one of kCoordinatorRpcs.
  void CoordinatorError(absl::string_view rpc);
  // A Heartbeat or RegisterWorker call succeeded now.
  void HeartbeatSucceeded();
  void SetPendingReports(int64_t n);
  void DroppedLogLines(int64_t n);

  // One metrics line of the rank-0 trainer in `slot`.
  void ObserveStep(int slot, const v1::StepMetrics& step, int64_t skipped_increment);
  // The device memory a metrics line of the rank-0 trainer in `slot` reported; what it did not
  // report is left as it was (never set: absent).
  void ObserveDeviceMemory(int slot, std::optional<int64_t> in_use, std::optional<int64_t> peak);
  // NVMe offload's figures from the same line: the swap files' bytes and the step's seconds
  // waiting for them; nothing when the line has none (no offload).
  void ObserveOffload(int slot, std::optional<int64_t> nvme_bytes,
                      std::optional<double> swap_wait_seconds);
  // Removes the gauges of `slot` (its rank-0 trainer ended).
  void ClearTrainingGauges(int slot);

 private:
  class Collector;
  struct SlotGauges {
    prometheus::Gauge* loss = nullptr;
    prometheus::Gauge* grad_norm = nullptr;
    prometheus::Gauge* loss_scale = nullptr;
    prometheus::Gauge* learning_rate = nullptr;
    prometheus::Gauge* tokens_per_second = nullptr;
    std::map<std::string, prometheus::Gauge*> memory;  // by category
    prometheus::Gauge* device_in_use = nullptr;
    prometheus::Gauge* device_peak = nullptr;
    prometheus::Gauge* nvme = nullptr;
    // A pipelined job's stages: bubble fraction, compute seconds, point-to-point bytes sent so
    // far and memory peak, by stage.
    std::map<int, std::array<prometheus::Gauge*, 4>> stages;
  };
  struct SlotCounters {
    prometheus::Histogram* step_seconds = nullptr;
    prometheus::Counter* skipped = nullptr;
    prometheus::Counter* steps = nullptr;
    prometheus::Counter* comm_bytes = nullptr;
    prometheus::Counter* comm_wait = nullptr;
    prometheus::Histogram* checkpoint_seconds = nullptr;
    prometheus::Counter* checkpoint_bytes = nullptr;
    prometheus::Counter* swap_wait = nullptr;  // made on the first line that reports it
  };

  void RefreshHeartbeatAge() const;
  SlotCounters& CountersLocked(int slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock* clock_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> collectable_;

  prometheus::Gauge* slots_;
  prometheus::Gauge* gpus_;
  prometheus::Gauge* registered_;
  prometheus::Gauge* ranks_starting_;
  prometheus::Gauge* ranks_running_;
  prometheus::Counter* exits_succeeded_;
  prometheus::Counter* exits_failed_;
  prometheus::Counter* exits_killed_;
  std::map<std::string, prometheus::Counter*, std::less<>> coordinator_errors_;
  prometheus::Gauge* heartbeat_age_;
  prometheus::Gauge* pending_reports_;
  prometheus::Counter* dropped_log_lines_;

  prometheus::Family<prometheus::Gauge>* loss_family_;
  prometheus::Family<prometheus::Gauge>* grad_norm_family_;
  prometheus::Family<prometheus::Gauge>* loss_scale_family_;
  prometheus::Family<prometheus::Gauge>* learning_rate_family_;
  prometheus::Family<prometheus::Gauge>* tokens_per_second_family_;
  prometheus::Family<prometheus::Gauge>* memory_family_;
  prometheus::Family<prometheus::Gauge>* device_memory_family_;
  prometheus::Family<prometheus::Gauge>* nvme_family_;
  prometheus::Family<prometheus::Counter>* swap_wait_family_;
  // Per pipeline stage, in SlotGauges::stages' order.
  std::array<prometheus::Family<prometheus::Gauge>*, 4> stage_families_;
  prometheus::Family<prometheus::Histogram>* step_seconds_family_;
  prometheus::Family<prometheus::Counter>* skipped_family_;
  prometheus::Family<prometheus::Counter>* steps_family_;
  prometheus::Family<prometheus::Counter>* comm_bytes_family_;
  prometheus::Family<prometheus::Counter>* comm_wait_family_;
  prometheus::Family<prometheus::Histogram>* checkpoint_seconds_family_;
  prometheus::Family<prometheus::Counter>* checkpoint_bytes_family_;

  mutable absl::Mutex mu_;
  absl::Time last_heartbeat_ ABSL_GUARDED_BY(mu_);
  std::map<int, SlotGauges> gauges_ ABSL_GUARDED_BY(mu_);
  std::map<int, SlotCounters> counters_ ABSL_GUARDED_BY(mu_);
};

// Serves an AgentMetrics at http://HOST:PORT/metrics (prometheus-cpp's Exposer).
class MetricsServer {
 public:
  // `listen` is HOST:PORT; port 0 picks a free one. UNAVAILABLE when it cannot listen. The server
  // holds `collectable` weakly: it serves nothing once the AgentMetrics is gone.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& listen, std::shared_ptr<prometheus::Collectable> collectable);
  ~MetricsServer();

  // The port it listens on.
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace dstrain::agent
