#include "worker/agent/health_server.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dstrain::agent {
namespace {

// gRPC refuses to start a server without a service of its own before the default health service
// is added; this one answers every unknown method with UNIMPLEMENTED, as gRPC would.
class UnimplementedService final : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext*) override {
    class Reactor final : public grpc::ServerGenericBidiReactor {
     public:
      Reactor() { Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "")); }
      void OnDone() override { delete this; }
    };
    return new Reactor();
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<HealthServer>> HealthServer::Start(const std::string& listen,
                                                                  const tls::TlsConfig& tls) {
  auto credentials = tls::ServerCredentials(tls, tls::ClientCertificates::kNone);
  if (!credentials.ok()) return credentials.status();
  grpc::EnableDefaultHealthCheckService(true);
  std::unique_ptr<HealthServer> server(new HealthServer());
  server->unimplemented_ = std::make_unique<UnimplementedService>();
  grpc::ServerBuilder builder;
  builder.RegisterCallbackGenericService(server->unimplemented_.get());
  builder.AddListeningPort(listen, *credentials, &server->port_);
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (grpc_server == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve gRPC health on ", listen));
  }
  grpc::HealthCheckServiceInterface* health = grpc_server->GetHealthCheckService();
  if (health == nullptr) return absl::InternalError("gRPC default health service is missing");
  health->SetServingStatus("liveness", true);
  {
    absl::MutexLock lock(&server->mu_);
    server->server_ = std::move(grpc_server);
  }
  server->SetReady(false);
  return server;
}

HealthServer::~HealthServer() { Shutdown(); }

void HealthServer::SetReady(bool ready) {
  absl::MutexLock lock(&mu_);
  if (server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus("", ready);
  health->SetServingStatus("readiness", ready);
}

void HealthServer::Shutdown() {
  std::unique_ptr<grpc::Server> server;
  {
    absl::MutexLock lock(&mu_);
    if (server_ == nullptr) return;
    if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
      health->Shutdown();
    }
    server = std::move(server_);
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  server->Wait();
}

}  // namespace dstrain::agent
