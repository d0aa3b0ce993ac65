#include "worker/agent/agent_metrics.h"

#include <exception>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace dstrain::agent {
namespace {

// Step wall time: from a tiny CPU model's tens of milliseconds to minutes-long steps.
const prometheus::Histogram::BucketBoundaries& StepBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
  return *buckets;
}

// Job-wide figures carry the job; a rank's own figures carry the rank too.
prometheus::Labels JobLabel(const TrainerLabels& t) { return {{"job_id", t.job_id}}; }
prometheus::Labels RankLabels(const TrainerLabels& t) {
  return {{"job_id", t.job_id}, {"rank", std::to_string(t.rank)}};
}

}  // namespace

// Refreshes the one time-dependent gauge at scrape time, then collects the registry.
class AgentMetrics::Collector final : public prometheus::Collectable {
 public:
  explicit Collector(const AgentMetrics* metrics) : metrics_(metrics) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    metrics_->RefreshHeartbeatAge();
    return metrics_->registry_->Collect();
  }

 private:
  const AgentMetrics* metrics_;
};

AgentMetrics::AgentMetrics(const Clock* clock)
    : clock_(clock), registry_(std::make_shared<prometheus::Registry>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  prometheus::Registry& r = *registry_;
  slots_ = &BuildGauge()
                .Name("dstrain_worker_slots")
                .Help("CPU trainer slots this worker offers (--slots).")
                .Register(r)
                .Add({});
  gpus_ = &BuildGauge()
               .Name("dstrain_worker_gpus")
               .Help("GPU slots this worker offers, one per GPU (--gpus).")
               .Register(r)
               .Add({});
  registered_ = &BuildGauge()
                     .Name("dstrain_worker_registered")
                     .Help("1 while the worker is registered with the coordinator, else 0.")
                     .Register(r)
                     .Add({});
  auto& ranks = BuildGauge()
                    .Name("dstrain_worker_ranks")
                    .Help("Trainer processes this worker runs, by state.")
                    .Register(r);
  ranks_starting_ = &ranks.Add({{"state", "starting"}});
  ranks_running_ = &ranks.Add({{"state", "running"}});
  auto& exits = BuildCounter()
                    .Name("dstrain_worker_trainer_exits_total")
                    .Help("Trainer processes that ended, by result.")
                    .Register(r);
  exits_succeeded_ = &exits.Add({{"result", "succeeded"}});
  exits_failed_ = &exits.Add({{"result", "failed"}});
  exits_killed_ = &exits.Add({{"result", "killed"}});
  auto& errors = BuildCounter()
                     .Name("dstrain_worker_coordinator_errors_total")
                     .Help("WorkerService calls to the coordinator that failed, by RPC.")
                     .Register(r);
  for (const char* rpc : kCoordinatorRpcs) coordinator_errors_[rpc] = &errors.Add({{"rpc", rpc}});
  heartbeat_age_ = &BuildGauge()
                        .Name("dstrain_worker_heartbeat_age_seconds")
                        .Help(
                            "Seconds since the last successful heartbeat or registration "
                            "(since the agent started when there was none).")
                        .Register(r)
                        .Add({});
  pending_reports_ = &BuildGauge()
                          .Name("dstrain_worker_pending_reports")
                          .Help("Status reports queued for the coordinator, not yet delivered.")
                          .Register(r)
                          .Add({});
  dropped_log_lines_ = &BuildCounter()
                            .Name("dstrain_worker_dropped_log_lines_total")
                            .Help("Trainer output lines dropped because the report queue was full.")
                            .Register(r)
                            .Add({});

  loss_family_ = &BuildGauge()
                      .Name("dstrain_train_loss")
                      .Help("Training loss of the last step reported by the rank-0 trainer.")
                      .Register(r);
  val_loss_family_ = &BuildGauge()
                          .Name("dstrain_train_val_loss")
                          .Help("Validation loss of the job's last evaluation.")
                          .Register(r);
  step_family_ = &BuildGauge()
                      .Name("dstrain_train_step")
                      .Help("Last optimizer step reported by the rank-0 trainer.")
                      .Register(r);
  grad_norm_family_ = &BuildGauge()
                           .Name("dstrain_train_grad_norm")
                           .Help("Global gradient norm (before clipping) of the last step.")
                           .Register(r);
  loss_scale_family_ = &BuildGauge()
                            .Name("dstrain_train_loss_scale")
                            .Help("Dynamic loss scale after the last step (1 without scaling).")
                            .Register(r);
  learning_rate_family_ = &BuildGauge()
                               .Name("dstrain_train_learning_rate")
                               .Help("Learning rate used by the last step.")
                               .Register(r);
  tokens_per_second_family_ = &BuildGauge()
                                   .Name("dstrain_train_tokens_per_second")
                                   .Help("Training throughput of the last step over all ranks.")
                                   .Register(r);
  memory_family_ = &BuildGauge()
                        .Name("dstrain_train_memory_bytes")
                        .Help("Bytes allocated by a rank's trainer, by category.")
                        .Register(r);
  stage_families_ = {
      &BuildGauge()
           .Name("dstrain_train_pipeline_bubble_fraction")
           .Help("A pipeline stage's bubble in the last step: 1 - its forward and backward time "
                 "over its time in the schedule (rank-0 trainer of a pipelined job).")
           .Register(r),
      &BuildGauge()
           .Name("dstrain_train_pipeline_compute_seconds")
           .Help("A pipeline stage's time in forward and backward passes in the last step.")
           .Register(r),
      &BuildGauge()
           .Name("dstrain_train_pipeline_p2p_sent_bytes")
           .Help("Activations and gradients a pipeline stage sent to its neighbours in this run.")
           .Register(r),
      &BuildGauge()
           .Name("dstrain_train_pipeline_memory_peak_bytes")
           .Help("A pipeline stage's memory peak in the last step.")
           .Register(r),
  };
  device_memory_family_ =
      &BuildGauge()
           .Name("dstrain_worker_device_memory_bytes")
           .Help(
               "Device memory of the rank-0 trainer on a GPU: in_use after the last step, peak "
               "so far.")
           .Register(r);
  nvme_family_ = &BuildGauge()
                      .Name("dstrain_train_nvme_bytes")
                      .Help("Optimizer state of the rank-0 trainer in swap files (NVMe offload).")
                      .Register(r);
  swap_wait_family_ =
      &BuildCounter()
           .Name("dstrain_train_swap_wait_seconds_total")
           .Help(
               "Seconds the rank-0 trainer's optimizer step waited for swap I/O (NVMe "
               "offload; not hidden by compute).")
           .Register(r);
  step_seconds_family_ = &BuildHistogram()
                              .Name("dstrain_train_step_seconds")
                              .Help("Wall time of optimizer steps of the rank-0 trainer.")
                              .Register(r);
  skipped_family_ = &BuildCounter()
                         .Name("dstrain_train_skipped_steps_total")
                         .Help("Optimizer steps skipped because of overflow or NaN.")
                         .Register(r);
  steps_family_ = &BuildCounter()
                       .Name("dstrain_train_steps_total")
                       .Help("Optimizer steps reported by the rank-0 trainer.")
                       .Register(r);
  comm_bytes_family_ = &BuildCounter()
                            .Name("dstrain_train_comm_bytes_total")
                            .Help("Bytes the rank-0 trainer sent in collectives and transfers.")
                            .Register(r);
  comm_wait_family_ =
      &BuildCounter()
           .Name("dstrain_train_comm_wait_seconds_total")
           .Help("Seconds the rank-0 trainer was blocked on collectives (not hidden by compute).")
           .Register(r);
  checkpoint_seconds_family_ =
      &BuildHistogram()
           .Name("dstrain_checkpoint_save_duration_seconds")
           .Help("Wall time of checkpoint saves (every rank's shard through the commit).")
           .Register(r);
  checkpoint_bytes_family_ = &BuildCounter()
                                  .Name("dstrain_checkpoint_bytes_total")
                                  .Help("Bytes of committed checkpoints, every rank's shard.")
                                  .Register(r);
  checkpoint_failures_family_ =
      &BuildCounter()
           .Name("dstrain_checkpoint_save_failures_total")
           .Help("Checkpoint saves that failed (the job restarts from its last committed one).")
           .Register(r);
  last_heartbeat_ = clock_->Now();
  collectable_ = std::make_shared<Collector>(this);
}

AgentMetrics::~AgentMetrics() = default;

std::string AgentMetrics::Serialize() const {
  return prometheus::TextSerializer().Serialize(collectable_->Collect());
}

void AgentMetrics::SetSlots(int slots) { slots_->Set(slots); }
void AgentMetrics::SetGpus(int gpus) { gpus_->Set(gpus); }
void AgentMetrics::SetRegistered(bool registered) { registered_->Set(registered ? 1 : 0); }

void AgentMetrics::SetRanks(int starting, int running) {
  ranks_starting_->Set(starting);
  ranks_running_->Set(running);
}

void AgentMetrics::TrainerExited(v1::RankState final_state) {
  switch (final_state) {
    case v1::RANK_STATE_SUCCEEDED:
      exits_succeeded_->Increment();
      break;
    case v1::RANK_STATE_FAILED:
      exits_failed_->Increment();
      break;
    case v1::RANK_STATE_KILLED:
      exits_killed_->Increment();
      break;
    default:
      break;
  }
}

void AgentMetrics::CoordinatorError(absl::string_view rpc) {
  const auto it = coordinator_errors_.find(rpc);
  if (it != coordinator_errors_.end()) it->second->Increment();
}

void AgentMetrics::HeartbeatSucceeded() {
  absl::MutexLock lock(&mu_);
  last_heartbeat_ = clock_->Now();
}

void AgentMetrics::RefreshHeartbeatAge() const {
  absl::MutexLock lock(&mu_);
  heartbeat_age_->Set(absl::ToDoubleSeconds(clock_->Now() - last_heartbeat_));
}

void AgentMetrics::SetPendingReports(int64_t n) { pending_reports_->Set(static_cast<double>(n)); }

void AgentMetrics::DroppedLogLines(int64_t n) {
  if (n > 0) dropped_log_lines_->Increment(static_cast<double>(n));
}

AgentMetrics::TrainerCounters& AgentMetrics::CountersLocked(const TrainerLabels& t) {
  TrainerCounters& c = counters_[t];
  // Running again (a later attempt of the job on this worker): not among the ended ones.
  for (auto it = ended_.begin(); it != ended_.end(); ++it) {
    if (it->job_id == t.job_id && it->rank == t.rank) {
      ended_.erase(it);
      break;
    }
  }
  if (c.step_seconds == nullptr) {
    const prometheus::Labels job = JobLabel(t);
    const prometheus::Labels rank = RankLabels(t);
    c.step_seconds = &step_seconds_family_->Add(job, StepBuckets());
    c.skipped = &skipped_family_->Add(job);
    c.steps = &steps_family_->Add(job);
    c.comm_bytes = &comm_bytes_family_->Add(rank);
    c.comm_wait = &comm_wait_family_->Add(rank);
    c.checkpoint_seconds = &checkpoint_seconds_family_->Add(
        job, prometheus::Histogram::BucketBoundaries{0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300});
    c.checkpoint_bytes = &checkpoint_bytes_family_->Add(job);
    c.checkpoint_failures = &checkpoint_failures_family_->Add(job);
  }
  return c;
}

void AgentMetrics::ObserveStep(const TrainerLabels& t, const v1::StepMetrics& step,
                               int64_t skipped_increment, bool checkpoint_failed) {
  absl::MutexLock lock(&mu_);
  TrainerCounters& c = CountersLocked(t);
  if (step.step_seconds() >= 0) c.step_seconds->Observe(step.step_seconds());
  if (skipped_increment > 0) c.skipped->Increment(static_cast<double>(skipped_increment));
  c.steps->Increment();
  if (step.comm_bytes() > 0) c.comm_bytes->Increment(static_cast<double>(step.comm_bytes()));
  if (step.comm_wait_seconds() > 0) c.comm_wait->Increment(step.comm_wait_seconds());
  if (step.has_checkpoint_seconds()) c.checkpoint_seconds->Observe(step.checkpoint_seconds());
  if (step.checkpoint_bytes() > 0) {
    c.checkpoint_bytes->Increment(static_cast<double>(step.checkpoint_bytes()));
  }
  if (checkpoint_failed) c.checkpoint_failures->Increment();

  TrainerGauges& g = gauges_[t];
  if (g.loss == nullptr) {
    const prometheus::Labels labels = JobLabel(t);
    g.loss = &loss_family_->Add(labels);
    g.step = &step_family_->Add(labels);
    g.grad_norm = &grad_norm_family_->Add(labels);
    g.loss_scale = &loss_scale_family_->Add(labels);
    g.learning_rate = &learning_rate_family_->Add(labels);
    g.tokens_per_second = &tokens_per_second_family_->Add(labels);
  }
  g.loss->Set(step.loss());
  g.step->Set(static_cast<double>(step.step()));
  g.grad_norm->Set(step.grad_norm());
  g.loss_scale->Set(step.loss_scale());
  g.learning_rate->Set(step.lr());
  g.tokens_per_second->Set(step.tokens_per_second());
  if (step.has_val_loss()) {
    if (g.val_loss == nullptr) g.val_loss = &val_loss_family_->Add(JobLabel(t));
    g.val_loss->Set(step.val_loss());
  }
  for (const auto& [category, bytes] : step.memory_bytes()) {
    prometheus::Gauge*& gauge = g.memory[category];
    if (gauge == nullptr) {
      prometheus::Labels labels = RankLabels(t);
      labels.emplace("category", category);
      gauge = &memory_family_->Add(labels);
    }
    gauge->Set(static_cast<double>(bytes));
  }
  for (const v1::StageMetrics& s : step.stages()) {
    auto [it, added] = g.stages.try_emplace(s.stage());
    if (added) {
      const prometheus::Labels labels = {{"job_id", t.job_id},
                                         {"stage", std::to_string(s.stage())}};
      for (size_t i = 0; i < stage_families_.size(); ++i) {
        it->second[i] = &stage_families_[i]->Add(labels);
      }
    }
    it->second[0]->Set(s.bubble_fraction());
    it->second[1]->Set(s.compute_seconds());
    it->second[2]->Set(static_cast<double>(s.p2p_bytes_sent()));
    it->second[3]->Set(static_cast<double>(s.memory_peak_bytes()));
  }
}

void AgentMetrics::ObserveDeviceMemory(const TrainerLabels& t, std::optional<int64_t> in_use,
                                       std::optional<int64_t> peak) {
  if (!in_use.has_value() && !peak.has_value()) return;
  absl::MutexLock lock(&mu_);
  TrainerGauges& g = gauges_[t];
  for (auto [value, gauge, state] : {std::make_tuple(in_use, &g.device_in_use, "in_use"),
                                     std::make_tuple(peak, &g.device_peak, "peak")}) {
    if (!value.has_value()) continue;
    if (*gauge == nullptr) {
      prometheus::Labels labels = RankLabels(t);
      labels.emplace("state", state);
      *gauge = &device_memory_family_->Add(labels);
    }
    (*gauge)->Set(static_cast<double>(*value));
  }
}

void AgentMetrics::ObserveOffload(const TrainerLabels& t, std::optional<int64_t> nvme_bytes,
                                  std::optional<double> swap_wait_seconds) {
  if (!nvme_bytes.has_value() && !swap_wait_seconds.has_value()) return;
  absl::MutexLock lock(&mu_);
  if (nvme_bytes.has_value()) {
    TrainerGauges& g = gauges_[t];
    if (g.nvme == nullptr) g.nvme = &nvme_family_->Add(RankLabels(t));
    g.nvme->Set(static_cast<double>(*nvme_bytes));
  }
  if (swap_wait_seconds.has_value()) {
    TrainerCounters& c = CountersLocked(t);
    if (c.swap_wait == nullptr) c.swap_wait = &swap_wait_family_->Add(RankLabels(t));
    if (*swap_wait_seconds > 0) c.swap_wait->Increment(*swap_wait_seconds);
  }
}

void AgentMetrics::TrainerEnded(const TrainerLabels& t) {
  absl::MutexLock lock(&mu_);
  RemoveGaugesLocked(t);
  if (counters_.count(t) == 0) return;
  ended_.push_back(t);
  while (ended_.size() > static_cast<size_t>(kEndedTrainersKept)) {
    RemoveCountersLocked(ended_.front());
    ended_.pop_front();
  }
}

void AgentMetrics::RemoveGaugesLocked(const TrainerLabels& t) {
  const auto it = gauges_.find(t);
  if (it == gauges_.end()) return;
  TrainerGauges& g = it->second;
  // Device memory may have been reported without a step's gauges, and the other way round.
  const auto remove = [](prometheus::Family<prometheus::Gauge>* family, prometheus::Gauge* gauge) {
    if (gauge != nullptr) family->Remove(gauge);
  };
  remove(loss_family_, g.loss);
  remove(val_loss_family_, g.val_loss);
  remove(step_family_, g.step);
  remove(grad_norm_family_, g.grad_norm);
  remove(loss_scale_family_, g.loss_scale);
  remove(learning_rate_family_, g.learning_rate);
  remove(tokens_per_second_family_, g.tokens_per_second);
  for (const auto& [category, gauge] : g.memory) memory_family_->Remove(gauge);
  remove(device_memory_family_, g.device_in_use);
  remove(device_memory_family_, g.device_peak);
  remove(nvme_family_, g.nvme);
  for (const auto& [stage, gauges] : g.stages) {
    for (size_t i = 0; i < stage_families_.size(); ++i) stage_families_[i]->Remove(gauges[i]);
  }
  gauges_.erase(it);
}

void AgentMetrics::RemoveCountersLocked(const TrainerLabels& t) {
  const auto it = counters_.find(t);
  if (it == counters_.end()) return;
  TrainerCounters& c = it->second;
  step_seconds_family_->Remove(c.step_seconds);
  skipped_family_->Remove(c.skipped);
  steps_family_->Remove(c.steps);
  comm_bytes_family_->Remove(c.comm_bytes);
  comm_wait_family_->Remove(c.comm_wait);
  checkpoint_seconds_family_->Remove(c.checkpoint_seconds);
  checkpoint_bytes_family_->Remove(c.checkpoint_bytes);
  checkpoint_failures_family_->Remove(c.checkpoint_failures);
  if (c.swap_wait != nullptr) swap_wait_family_->Remove(c.swap_wait);
  counters_.erase(it);
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& listen, std::shared_ptr<prometheus::Collectable> collectable) {
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  try {
    server->exposer_ = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", e.what()));
  }
  server->exposer_->RegisterCollectable(collectable);
  const std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen));
  }
  server->port_ = ports.front();
  return server;
}

MetricsServer::~MetricsServer() = default;

}  // namespace dstrain::agent
