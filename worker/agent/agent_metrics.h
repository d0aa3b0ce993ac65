// The worker agent's Prometheus metrics (docs/service.md, "Metrics and health"): the `dstrain_`
// prefix, base units, counters ending in _total, HELP on every family, bounded labels only
// (state, result, rpc, job_id, rank, category, stage).
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
// From the metrics lines of a job's rank-0 trainer, labelled by `job_id` (not `job`: Prometheus
// sets a target label of that name, and a scraped `job` would be renamed `exported_job`), and by
// `rank` where the figure is one rank's own:
//   dstrain_train_loss, dstrain_train_grad_norm, dstrain_train_loss_scale,
//   dstrain_train_learning_rate, dstrain_train_tokens_per_second, dstrain_train_step
//                                                 gauges     the last step's values {job_id}
//   dstrain_train_val_loss                        gauge      the last evaluation's loss {job_id}
//   dstrain_train_memory_bytes{category}          gauge      bytes allocated, by category
//                                                            {job_id,rank,category}
//   dstrain_train_step_seconds                    histogram  wall time of optimizer steps {job_id}
//   dstrain_train_skipped_steps_total             counter    steps skipped (overflow or NaN)
//   dstrain_train_steps_total                     counter    metrics lines relayed {job_id}
//   dstrain_train_comm_bytes_total                counter    bytes sent in collectives and
//                                                            transfers {job_id,rank}
//   dstrain_train_comm_wait_seconds_total         counter    time blocked on collectives
//                                                            {job_id,rank}
//   dstrain_checkpoint_save_duration_seconds      histogram  wall time of checkpoint saves {job_id}
//   dstrain_checkpoint_bytes_total                counter    bytes of committed checkpoints
//   dstrain_checkpoint_save_failures_total        counter    checkpoint saves that failed {job_id}
//   dstrain_train_pipeline_bubble_fraction{stage}, dstrain_train_pipeline_compute_seconds{stage},
//   dstrain_train_pipeline_p2p_sent_bytes{stage}, dstrain_train_pipeline_memory_peak_bytes{stage}
//                                                 gauges     a pipelined job's stages: the last
//                                                            step's bubble, forward and backward
//                                                            time and memory peak; bytes sent to
//                                                            the neighbours in this run
//                                                            {job_id,stage}
//   dstrain_worker_device_memory_bytes{state}     gauge      the trainer's device memory:
//                                                            in_use after the last step, peak
//                                                            so far; only from lines that carry
//                                                            it (a trainer on a GPU)
//                                                            {job_id,rank,state}
//   dstrain_train_nvme_bytes                      gauge      bytes of optimizer state in swap
//                                                            files (NVMe offload); only from
//                                                            lines that carry it {job_id,rank}
//   dstrain_train_swap_wait_seconds_total         counter    time the optimizer step waited for
//                                                            swap I/O (not hidden by compute)
//                                                            {job_id,rank}
// clang-format on
// A trainer's gauges are removed when it ends (no stale loss after a job). Its counters and
// histograms keep their totals until kEndedTrainersKept later trainers have ended too (a scrape
// after the end still sees the last increments; a daemon that runs jobs for months does not
// keep a series per job forever).
//
// Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

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

// Which trainer a metrics line came from: a job's rank.
struct TrainerLabels {
  std::string job_id;
  int rank = 0;
  bool operator<(const TrainerLabels& o) const {
    return std::tie(job_id, rank) < std::tie(o.job_id, o.rank);
  }
};

class AgentMetrics {
 public:
  // Ended trainers whose counters and histograms are still exported.
  static constexpr int kEndedTrainersKept = 16;

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

  // One metrics line of the trainer `t` (a job's rank 0). `checkpoint_failed`: the line says the
  // step's checkpoint save failed.
  void ObserveStep(const TrainerLabels& t, const v1::StepMetrics& step, int64_t skipped_increment,
                   bool checkpoint_failed = false);
  // The device memory a metrics line of `t` reported; what it did not report is left as it was
  // (never set: absent).
  void ObserveDeviceMemory(const TrainerLabels& t, std::optional<int64_t> in_use,
                           std::optional<int64_t> peak);
  // NVMe offload's figures from the same line: the swap files' bytes and the step's seconds
  // waiting for them; nothing when the line has none (no offload).
  void ObserveOffload(const TrainerLabels& t, std::optional<int64_t> nvme_bytes,
                      std::optional<double> swap_wait_seconds);
  // `t` ended: removes its gauges, and the counters of the trainer that ended kEndedTrainersKept
  // trainers ago.
  void TrainerEnded(const TrainerLabels& t);

 private:
  class Collector;
  struct TrainerGauges {
    prometheus::Gauge* loss = nullptr;
    prometheus::Gauge* val_loss = nullptr;  // made on the first line with an evaluation
    prometheus::Gauge* step = nullptr;
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
  struct TrainerCounters {
    prometheus::Histogram* step_seconds = nullptr;
    prometheus::Counter* skipped = nullptr;
    prometheus::Counter* steps = nullptr;
    prometheus::Counter* comm_bytes = nullptr;
    prometheus::Counter* comm_wait = nullptr;
    prometheus::Histogram* checkpoint_seconds = nullptr;
    prometheus::Counter* checkpoint_bytes = nullptr;
    prometheus::Counter* checkpoint_failures = nullptr;
    prometheus::Counter* swap_wait = nullptr;  // made on the first line that reports it
  };

  void RefreshHeartbeatAge() const;
  TrainerCounters& CountersLocked(const TrainerLabels& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveGaugesLocked(const TrainerLabels& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveCountersLocked(const TrainerLabels& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

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
  prometheus::Family<prometheus::Gauge>* val_loss_family_;
  prometheus::Family<prometheus::Gauge>* step_family_;
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
  prometheus::Family<prometheus::Counter>* checkpoint_failures_family_;

  mutable absl::Mutex mu_;
  absl::Time last_heartbeat_ ABSL_GUARDED_BY(mu_);
  std::map<TrainerLabels, TrainerGauges> gauges_ ABSL_GUARDED_BY(mu_);
  std::map<TrainerLabels, TrainerCounters> counters_ ABSL_GUARDED_BY(mu_);
  // Trainers that ended, oldest first, whose counters are still exported.
  std::deque<TrainerLabels> ended_ ABSL_GUARDED_BY(mu_);
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
