// HealthServer: the agent's own gRPC endpoint (--listen), carrying only the standard gRPC health
// service (grpc.health.v1.Health, gRPC's default implementation) for probes such as Kubernetes'
// grpc: probe or grpc_health_probe (docs/service.md, "Metrics and health").
//
// Service names and their meaning:
//   ""           SERVING while the agent is registered with the coordinator and its last
//                heartbeat succeeded (readiness of the whole worker); NOT_SERVING before, while
//                the coordinator is unreachable, and from shutdown on.
//   "readiness"  the same as "".
//   "liveness"   SERVING from start until shutdown: the agent process works even while the
//                coordinator is away, so a liveness probe must not restart it (that would kill
//                its trainers).
// Any other method answers UNIMPLEMENTED. Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/tls/tls.h"

namespace grpc {
class Server;
class CallbackGenericService;
}  // namespace grpc

namespace dstrain::agent {

class HealthServer {
 public:
  // Listens on `listen` (HOST:PORT, port 0 picks a free one), over TLS with the worker's
  // certificate unless tls.insecure (probes need no client certificate). UNAVAILABLE when it
  // cannot listen, the TLS files' error when they cannot be read. Turns on
  // grpc::EnableDefaultHealthCheckService for the process (gRPC's switch is global).
  static absl::StatusOr<std::unique_ptr<HealthServer>> Start(const std::string& listen,
                                                             const tls::TlsConfig& tls);
  ~HealthServer();

  int port() const { return port_; }
  // Sets "" and "readiness".
  void SetReady(bool ready);
  // Everything NOT_SERVING for good, then stops the server. Idempotent.
  void Shutdown();

 private:
  HealthServer() = default;
  std::unique_ptr<grpc::CallbackGenericService> unimplemented_;
  absl::Mutex mu_;
  std::unique_ptr<grpc::Server> server_ ABSL_GUARDED_BY(mu_);
  int port_ = 0;
};

}  // namespace dstrain::agent
