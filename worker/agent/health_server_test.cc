#include "worker/agent/health_server.h"

#include <filesystem>
#include <string>

#include "common/status/status_matchers.h"
#include "common/tls/testing/test_pki.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/worker.grpc.pb.h"
#include "worker/agent/fake_coordinator.h"

namespace dstrain::agent {
namespace {

using ::dstrain::testing::IsOk;

const tls::TlsConfig kPlaintext = {.insecure = true};
constexpr int kServing = 1;
constexpr int kNotServing = 2;

// The serving status, or -1 when the call fails.
int Check(const std::string& address, const std::string& service) {
  auto status = testing::HealthCheck(address, service);
  if (!status.ok()) {
    ADD_FAILURE() << service << ": " << status.status();
    return -1;
  }
  return *status;
}

TEST(HealthServer, ReadinessFollowsSetReadyAndLivenessStaysUp) {
  auto server = HealthServer::Start("127.0.0.1:0", kPlaintext);
  ASSERT_THAT(server, IsOk());
  const std::string address = "127.0.0.1:" + std::to_string((*server)->port());
  EXPECT_EQ(Check(address, ""), kNotServing);
  EXPECT_EQ(Check(address, "readiness"), kNotServing);
  EXPECT_EQ(Check(address, "liveness"), kServing);
  (*server)->SetReady(true);
  EXPECT_EQ(Check(address, ""), kServing);
  EXPECT_EQ(Check(address, "readiness"), kServing);
  (*server)->SetReady(false);
  EXPECT_EQ(Check(address, ""), kNotServing);
  // An unknown service is NOT_FOUND, as the health protocol says.
  EXPECT_EQ(testing::HealthCheck(address, "nope").status().code(), absl::StatusCode::kNotFound);
  (*server)->Shutdown();
  (*server)->SetReady(true);  // harmless after shutdown
}

TEST(HealthServer, OtherMethodsAreUnimplemented) {
  auto server = HealthServer::Start("127.0.0.1:0", kPlaintext);
  ASSERT_THAT(server, IsOk());
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::WorkerService::NewStub(channel);
  grpc::ClientContext context;
  v1::ListWorkersResponse response;
  const grpc::Status status = stub->ListWorkers(&context, v1::ListWorkersRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

// With the worker's certificate the port speaks TLS only: a probe that trusts the CA gets its
// answer without a client certificate, a plaintext one gets nothing.
TEST(HealthServer, ServesTlsWithTheWorkersCertificate) {
  const std::string dir = std::string(getenv("TEST_TMPDIR")) + "/health_pki";
  std::filesystem::create_directories(dir);
  auto pki = tls::testing::TestPki::Create(dir);
  ASSERT_THAT(pki, IsOk());
  auto worker = pki->Issue("worker:wa", {}, "worker");
  ASSERT_THAT(worker, IsOk());
  auto server = HealthServer::Start("127.0.0.1:0", pki->Config(*worker));
  ASSERT_THAT(server, IsOk());
  const std::string port = std::to_string((*server)->port());
  auto probe = tls::ChannelCredentials({false, pki->ca_cert(), "", ""});
  ASSERT_THAT(probe, IsOk());
  auto live = testing::HealthCheck("127.0.0.1:" + port, "liveness", *probe);
  ASSERT_THAT(live, IsOk());
  EXPECT_EQ(*live, kServing);
  EXPECT_EQ(testing::HealthCheck("127.0.0.1:" + port, "liveness").status().code(),
            absl::StatusCode::kUnavailable);
  (*server)->Shutdown();
  tls::TlsConfig missing = pki->Config(*worker);
  missing.cert = dir + "/none.pem";
  EXPECT_FALSE(HealthServer::Start("127.0.0.1:0", missing).ok());
}

}  // namespace
}  // namespace dstrain::agent
