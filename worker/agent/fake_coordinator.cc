#include "worker/agent/fake_coordinator.h"

#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace dstrain::agent::testing {
namespace {

google::protobuf::Duration ToProto(absl::Duration d) {
  google::protobuf::Duration out;
  const int64_t nanos = absl::ToInt64Nanoseconds(d);
  out.set_seconds(nanos / 1'000'000'000);
  out.set_nanos(static_cast<int32_t>(nanos % 1'000'000'000));
  return out;
}

bool CallFunction(std::function<bool()>* f) { return (*f)(); }

}  // namespace

class FakeCoordinator::Service final : public v1::WorkerService::Service {
 public:
  explicit Service(FakeCoordinator* fake) : f_(fake) {}

  grpc::Status RegisterWorker(grpc::ServerContext*, const v1::RegisterWorkerRequest* request,
                              v1::RegisterWorkerResponse* response) override {
    absl::MutexLock lock(&f_->mu_);
    f_->registrations_.push_back(*request);
    // Each registration its own session token, as the coordinator issues them.
    response->set_session_token(absl::StrCat("session-", f_->registrations_.size()));
    *response->mutable_lease_duration() = ToProto(absl::Seconds(10));
    *response->mutable_heartbeat_interval() = ToProto(f_->heartbeat_interval_);
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse*) override {
    absl::MutexLock lock(&f_->mu_);
    f_->heartbeats_.push_back(*request);
    if (f_->heartbeat_failures_ > 0) {
      --f_->heartbeat_failures_;
      return grpc::Status(f_->heartbeat_fail_code_, "injected heartbeat failure");
    }
    return grpc::Status::OK;
  }

  grpc::Status ReportStatus(grpc::ServerContext*, const v1::ReportStatusRequest* request,
                            v1::ReportStatusResponse*) override {
    absl::MutexLock lock(&f_->mu_);
    if (f_->report_failures_ > 0) {
      --f_->report_failures_;
      return grpc::Status(f_->report_fail_code_, "injected report failure");
    }
    f_->reports_.push_back(*request);
    return grpc::Status::OK;
  }

  grpc::Status StreamAssignments(
      grpc::ServerContext* context, const v1::StreamAssignmentsRequest* request,
      grpc::ServerWriter<v1::StreamAssignmentsResponse>* writer) override {
    int64_t generation;
    {
      absl::MutexLock lock(&f_->mu_);
      f_->stream_tokens_.push_back(request->session_token());
      generation = ++f_->stream_generation_;
      ++f_->streams_opened_;
    }
    for (;;) {
      v1::StreamAssignmentsResponse response;
      {
        absl::MutexLock lock(&f_->mu_);
        std::function<bool()> wake = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return !f_->outbox_.empty() || !f_->serving_ || generation != f_->stream_generation_;
        };
        f_->mu_.AwaitWithTimeout(absl::Condition(&CallFunction, &wake), absl::Milliseconds(20));
        if (!f_->serving_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "shutting down");
        if (generation != f_->stream_generation_) {
          return grpc::Status(grpc::StatusCode::CANCELLED, "replaced by a newer stream");
        }
        if (context->IsCancelled()) return grpc::Status::CANCELLED;
        if (f_->outbox_.empty()) continue;
        *response.mutable_assignment() = f_->outbox_.front();
        f_->outbox_.pop_front();
      }
      if (!writer->Write(response)) {
        absl::MutexLock lock(&f_->mu_);
        f_->outbox_.push_front(response.assignment());
        return grpc::Status::CANCELLED;
      }
    }
  }

  grpc::Status ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*,
                           v1::ListWorkersResponse*) override {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "fake");
  }

 private:
  FakeCoordinator* f_;
};

FakeCoordinator::FakeCoordinator() = default;

FakeCoordinator::~FakeCoordinator() { Stop(); }

absl::Status FakeCoordinator::Start(int port) {
  int selected = 0;
  {
    absl::MutexLock lock(&mu_);
    if (port == 0) port = port_;
    serving_ = true;
  }
  service_ = std::make_unique<Service>(this);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(),
                           &selected);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || selected == 0) {
    return absl::UnavailableError(absl::StrCat("fake coordinator cannot listen on ", port));
  }
  absl::MutexLock lock(&mu_);
  port_ = selected;
  return absl::OkStatus();
}

void FakeCoordinator::Stop() {
  {
    absl::MutexLock lock(&mu_);
    serving_ = false;
  }
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Milliseconds(200)));
    server_->Wait();
    server_.reset();
  }
  service_.reset();
}

int FakeCoordinator::port() const {
  absl::MutexLock lock(&mu_);
  return port_;
}

std::string FakeCoordinator::address() const { return absl::StrCat("127.0.0.1:", port()); }

void FakeCoordinator::set_heartbeat_interval(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  heartbeat_interval_ = d;
}

void FakeCoordinator::FailHeartbeats(grpc::StatusCode code, int n) {
  absl::MutexLock lock(&mu_);
  heartbeat_fail_code_ = code;
  heartbeat_failures_ = n;
}

void FakeCoordinator::FailReports(grpc::StatusCode code, int n) {
  absl::MutexLock lock(&mu_);
  report_fail_code_ = code;
  report_failures_ = n;
}

void FakeCoordinator::Push(const v1::Assignment& a) {
  absl::MutexLock lock(&mu_);
  outbox_.push_back(a);
}

std::vector<v1::RegisterWorkerRequest> FakeCoordinator::registrations() const {
  absl::MutexLock lock(&mu_);
  return registrations_;
}

std::vector<v1::HeartbeatRequest> FakeCoordinator::heartbeats() const {
  absl::MutexLock lock(&mu_);
  return heartbeats_;
}

std::vector<v1::ReportStatusRequest> FakeCoordinator::reports() const {
  absl::MutexLock lock(&mu_);
  return reports_;
}

std::vector<std::string> FakeCoordinator::stream_tokens() const {
  absl::MutexLock lock(&mu_);
  return stream_tokens_;
}

int FakeCoordinator::streams_opened() const {
  absl::MutexLock lock(&mu_);
  return streams_opened_;
}

bool Eventually(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int e = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(e)));
  }
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError("short write");
  }
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;)
    response.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.compare(0, 12, "HTTP/1.1 200") != 0 &&
      response.compare(0, 12, "HTTP/1.0 200") != 0) {
    return absl::UnavailableError(absl::StrCat("bad response: ", response.substr(0, 100)));
  }
  return body == std::string::npos ? "" : response.substr(body + 4);
}

absl::StatusOr<int> HealthCheck(const std::string& address, const std::string& service,
                                std::shared_ptr<grpc::ChannelCredentials> credentials) {
  auto channel = grpc::CreateChannel(
      address, credentials != nullptr ? credentials : grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  // HealthCheckRequest{string service = 1}.
  std::string request_bytes;
  if (!service.empty()) {
    request_bytes.push_back(0x0a);
    request_bytes.push_back(static_cast<char>(service.size()));
    request_bytes += service;
  }
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  }
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return absl::InternalError("cannot read the response");
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // HealthCheckResponse{ServingStatus status = 1}: absent means UNKNOWN (0).
  if (bytes.empty()) return 0;
  if (bytes.size() != 2 || bytes[0] != 0x08) return absl::InternalError("unexpected response");
  return static_cast<int>(bytes[1]);
}

}  // namespace dstrain::agent::testing
