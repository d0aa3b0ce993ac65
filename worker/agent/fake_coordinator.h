// FakeCoordinator: an in-process WorkerService on 127.0.0.1 for the agent's tests. It records
// what the agent sends, answers with knobs the test sets, and pushes assignments into the
// agent's stream on demand. Stop() and Start(port) restart it on the same port with the records
// kept, as a restarted coordinator would look to the agent. Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/worker.grpc.pb.h"

namespace dstrain::agent::testing {

class FakeCoordinator {
 public:
  FakeCoordinator();
  ~FakeCoordinator();

  // Listens on 127.0.0.1:`port` (0: a free port, then kept for later restarts).
  absl::Status Start(int port = 0);
  // Stops serving; open streams end with UNAVAILABLE. Records are kept.
  void Stop();

  int port() const;
  std::string address() const;

  // Knobs.
  void set_heartbeat_interval(absl::Duration d);
  // The next `n` Heartbeat calls fail with `code`.
  void FailHeartbeats(grpc::StatusCode code, int n);
  // The next `n` ReportStatus calls fail with `code`.
  void FailReports(grpc::StatusCode code, int n);
  // Sends `a` to the agent's stream (queued until a stream is open).
  void Push(const v1::Assignment& a);

  // Records.
  std::vector<v1::RegisterWorkerRequest> registrations() const;
  std::vector<v1::HeartbeatRequest> heartbeats() const;
  std::vector<v1::ReportStatusRequest> reports() const;
  // The session token of every StreamAssignments call, in order.
  std::vector<std::string> stream_tokens() const;
  int streams_opened() const;

 private:
  class Service;

  mutable absl::Mutex mu_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ ABSL_GUARDED_BY(mu_) = 0;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration heartbeat_interval_ ABSL_GUARDED_BY(mu_) = absl::Milliseconds(100);
  grpc::StatusCode heartbeat_fail_code_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;
  int heartbeat_failures_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::StatusCode report_fail_code_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;
  int report_failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<v1::Assignment> outbox_ ABSL_GUARDED_BY(mu_);
  int64_t stream_generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::RegisterWorkerRequest> registrations_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::HeartbeatRequest> heartbeats_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ReportStatusRequest> reports_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> stream_tokens_ ABSL_GUARDED_BY(mu_);
  int streams_opened_ ABSL_GUARDED_BY(mu_) = 0;
};

// Polls `done` every 10 ms until it holds or `timeout` passes.
bool Eventually(const std::function<bool()>& done, absl::Duration timeout);

// The body of GET http://127.0.0.1:`port``path` (HTTP/1.0 over a plain socket), or an error.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// grpc.health.v1.Health/Check of `service` at `address`, called with a hand-encoded request:
// 1 SERVING, 2 NOT_SERVING (HealthCheckResponse.ServingStatus), or the call's error.
// `credentials`: the channel's (default: plaintext).
absl::StatusOr<int> HealthCheck(const std::string& address, const std::string& service,
                                std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

}  // namespace dstrain::agent::testing
