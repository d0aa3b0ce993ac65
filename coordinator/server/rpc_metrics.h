// The coordinator's Prometheus metrics (docs/service.md, "Metrics and health": `dstrain_` prefix,
// base units, bounded labels): per-RPC latency histograms and outcome counters observed by the
// services, and the control plane's gauges (jobs by state, queue depth, workers by state, slots,
// heartbeat age) read from Coordinator::Stats() at every scrape.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "coordinator/server/coordinator.h"

namespace dstrain::coordinator {

class RpcMetrics {
 public:
  explicit RpcMetrics(prometheus::Registry* registry);
  // Thread-safe.
  void Observe(const std::string& method, absl::StatusCode code, absl::Duration latency);

 private:
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Family<prometheus::Counter>& calls_;
};

// Times one RPC from construction to destruction.
class RpcTimer {
 public:
  RpcTimer(RpcMetrics* metrics, const char* method)
      : metrics_(metrics), method_(method), start_(absl::Now()) {}
  ~RpcTimer() {
    if (metrics_ != nullptr) metrics_->Observe(method_, code_, absl::Now() - start_);
  }
  void set_code(absl::StatusCode code) { code_ = code; }

 private:
  RpcMetrics* const metrics_;
  const char* const method_;
  const absl::Time start_;
  absl::StatusCode code_ = absl::StatusCode::kOk;
};

// Gauges computed at scrape time from the coordinator's state.
class CoordinatorCollector final : public prometheus::Collectable {
 public:
  explicit CoordinatorCollector(Coordinator* coordinator) : coordinator_(coordinator) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  Coordinator* const coordinator_;
};

// gRPC status code names as Prometheus label values ("OK", "NOT_FOUND", ...).
const char* StatusCodeLabel(absl::StatusCode code);

}  // namespace dstrain::coordinator
