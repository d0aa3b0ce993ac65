#include "coordinator/server/rpc_metrics.h"

#include <prometheus/metric_family.h>

#include "common/jobspec/job_device.h"

namespace dstrain::coordinator {
namespace {

// 100 µs .. 10 s: a heartbeat takes well under a millisecond, a submit a synced write or two.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 10};
  return *buckets;
}

prometheus::MetricFamily Gauge(std::string name, std::string help) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = prometheus::MetricType::Gauge;
  return f;
}

void AddSample(prometheus::MetricFamily* f, double value,
               std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  f->metric.push_back(std::move(m));
}

}  // namespace

const char* StatusCodeLabel(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return "OK";
    case absl::StatusCode::kCancelled:
      return "CANCELLED";
    case absl::StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case absl::StatusCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case absl::StatusCode::kNotFound:
      return "NOT_FOUND";
    case absl::StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case absl::StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case absl::StatusCode::kAborted:
      return "ABORTED";
    case absl::StatusCode::kOutOfRange:
      return "OUT_OF_RANGE";
    case absl::StatusCode::kUnimplemented:
      return "UNIMPLEMENTED";
    case absl::StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case absl::StatusCode::kDataLoss:
      return "DATA_LOSS";
    case absl::StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    case absl::StatusCode::kInternal:
      return "INTERNAL";
    default:
      return "UNKNOWN";
  }
}

RpcMetrics::RpcMetrics(prometheus::Registry* registry)
    : latency_(prometheus::BuildHistogram()
                   .Name("dstrain_coordinator_rpc_duration_seconds")
                   .Help("Time the coordinator took to answer a unary RPC, by method.")
                   .Register(*registry)),
      calls_(prometheus::BuildCounter()
                 .Name("dstrain_coordinator_rpcs_total")
                 .Help("Unary RPCs the coordinator answered, by method and gRPC status code.")
                 .Register(*registry)) {}

void RpcMetrics::Observe(const std::string& method, absl::StatusCode code, absl::Duration latency) {
  latency_.Add({{"method", method}}, LatencyBuckets()).Observe(absl::ToDoubleSeconds(latency));
  calls_.Add({{"method", method}, {"code", StatusCodeLabel(code)}}).Increment();
}

std::vector<prometheus::MetricFamily> CoordinatorCollector::Collect() const {
  const CoordinatorStats stats = coordinator_->Stats();
  std::vector<prometheus::MetricFamily> out;
  prometheus::MetricFamily jobs = Gauge("dstrain_jobs", "Jobs the coordinator knows, by state.");
  for (v1::JobState s : {v1::JOB_STATE_PENDING, v1::JOB_STATE_SCHEDULED, v1::JOB_STATE_RUNNING,
                         v1::JOB_STATE_RESTARTING, v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED,
                         v1::JOB_STATE_CANCELLED}) {
    auto it = stats.jobs_by_state.find(s);
    AddSample(&jobs, it == stats.jobs_by_state.end() ? 0 : it->second,
              {{"state", JobStateName(s)}});
  }
  out.push_back(std::move(jobs));
  prometheus::MetricFamily queue =
      Gauge("dstrain_queue_depth", "Jobs waiting for a gang of free slots.");
  AddSample(&queue, stats.queue_depth);
  out.push_back(std::move(queue));
  prometheus::MetricFamily workers = Gauge("dstrain_workers", "Registered workers, by state.");
  AddSample(&workers, stats.workers.ready, {{"state", "READY"}});
  AddSample(&workers, stats.workers.lost, {{"state", "LOST"}});
  out.push_back(std::move(workers));
  prometheus::MetricFamily slots =
      Gauge("dstrain_slots",
            "Trainer slots of READY workers by kind (gpu, cpu), free or in use by a rank.");
  const RegistryCounts& w = stats.workers;
  const int cpu_total = w.total_slots - w.total_gpu_slots;
  const int cpu_free = w.free_slots - w.free_gpu_slots;
  AddSample(&slots, w.free_gpu_slots, {{"kind", "gpu"}, {"state", "free"}});
  AddSample(&slots, w.total_gpu_slots - w.free_gpu_slots, {{"kind", "gpu"}, {"state", "used"}});
  AddSample(&slots, cpu_free, {{"kind", "cpu"}, {"state", "free"}});
  AddSample(&slots, cpu_total - cpu_free, {{"kind", "cpu"}, {"state", "used"}});
  out.push_back(std::move(slots));
  prometheus::MetricFamily age =
      Gauge("dstrain_worker_heartbeat_age_max_seconds",
            "Seconds since the least recent heartbeat of a READY worker.");
  AddSample(&age, stats.max_heartbeat_age_seconds);
  out.push_back(std::move(age));
  prometheus::MetricFamily ages = Gauge("dstrain_coordinator_worker_heartbeat_age_seconds",
                                        "Seconds since each READY worker's last heartbeat.");
  for (const auto& [worker, seconds] : stats.heartbeat_age_seconds) {
    AddSample(&ages, seconds, {{"worker_id", worker}});
  }
  out.push_back(std::move(ages));
  prometheus::MetricFamily lease = Gauge(
      "dstrain_worker_lease_seconds", "Heartbeat silence after which a worker is declared LOST.");
  AddSample(&lease, stats.lease_seconds);
  out.push_back(std::move(lease));

  // One series per job that has not ended (a finished job's series end with it).
  struct PerJob {
    const char* name;
    const char* help;
    double (*value)(const JobGauges&);
  };
  static constexpr PerJob kPerJob[] = {
      {"dstrain_job_world_size", "Ranks of a job that has not ended.",
       [](const JobGauges& g) { return double(g.world_size); }},
      {"dstrain_job_queued_seconds",
       "Seconds a job has waited in the queue since it last entered it (0 once placed).",
       [](const JobGauges& g) { return g.queued_seconds; }},
      {"dstrain_job_restarts", "Restarts of a job after failures so far.",
       [](const JobGauges& g) { return double(g.restarts); }},
      {"dstrain_job_max_restarts", "A job's restart budget (job.max_restarts).",
       [](const JobGauges& g) { return double(g.max_restarts); }},
      {"dstrain_job_step", "Last optimizer step a job's rank 0 reported.",
       [](const JobGauges& g) { return double(g.step); }},
      {"dstrain_job_train_steps", "Optimizer steps a job runs in total (job.train_steps).",
       [](const JobGauges& g) { return double(g.train_steps); }},
      {"dstrain_job_checkpoint_every_steps",
       "A job's checkpoint interval in steps (job.checkpoint_every; 0: none).",
       [](const JobGauges& g) { return double(g.checkpoint_every); }},
      {"dstrain_job_last_checkpoint_step",
       "Step of a job's newest committed checkpoint (0 before the first).",
       [](const JobGauges& g) { return double(g.last_checkpoint_step); }},
  };
  prometheus::MetricFamily info =
      Gauge("dstrain_job_info", "1 for each job that has not ended, with its state and device.");
  for (const JobGauges& g : stats.jobs) {
    AddSample(&info, 1,
              {{"job_id", g.job_id},
               {"state", JobStateName(g.state)},
               {"device", jobspec::JobDeviceName(g.device)}});
  }
  out.push_back(std::move(info));
  for (const PerJob& p : kPerJob) {
    prometheus::MetricFamily f = Gauge(p.name, p.help);
    for (const JobGauges& g : stats.jobs) AddSample(&f, p.value(g), {{"job_id", g.job_id}});
    out.push_back(std::move(f));
  }
  prometheus::MetricFamily committed =
      Gauge("dstrain_job_last_checkpoint_timestamp_seconds",
            "When a job's newest checkpoint was committed (Unix seconds); absent before one.");
  for (const JobGauges& g : stats.jobs) {
    if (g.last_checkpoint_unix_seconds) {
      AddSample(&committed, *g.last_checkpoint_unix_seconds, {{"job_id", g.job_id}});
    }
  }
  out.push_back(std::move(committed));
  return out;
}

}  // namespace dstrain::coordinator
