// StoreService on the wire, against a hostile caller: without a credential, or with a forged one,
// nothing is read or written (UNAUTHENTICATED); one attempt's credential reaches only its own
// keys (PERMISSION_DENIED for another job's, which stay as they were); a Wait without a timeout
// (or with a huge one) ends at the service's bound instead of holding a server thread for good;
// the largest value the service accepts travels within gRPC's default receive limit, and one byte
// more is the service's INVALID_ARGUMENT naming the field, not a transport error.
#include "coordinator/store/store_service.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "worker/store/grpc_store.h"

namespace dstrain::coordinator {
namespace {

class NullLog final : public KvLog {
 public:
  absl::Status Put(absl::string_view, absl::string_view) override { return absl::OkStatus(); }
  absl::Status Delete(absl::string_view) override { return absl::OkStatus(); }
};

class StoreServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::StoreService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    durable_.Close();
    server_->Shutdown(std::chrono::system_clock::now());
  }

  static constexpr absl::Duration kBound = absl::Milliseconds(300);
  static constexpr char kScopeA[] = "jobs/a/attempt-1";
  static constexpr char kScopeB[] = "jobs/b/attempt-1";
  NullLog log_;
  DurableStore durable_{&log_, {}};
  const StoreCredentials credentials_{std::string(32, 'c')};
  // The scopes the binding to workers refuses (the coordinator's MayUseStoreScope in main.cc).
  absl::Mutex refused_mu_;
  std::set<std::string> refused_ ABSL_GUARDED_BY(refused_mu_);
  StoreServiceImpl service_{
      &durable_, &credentials_, kBound,
      [this](const grpc::ServerContext&, absl::string_view scope) {
        absl::MutexLock lock(&refused_mu_);
        if (refused_.count(std::string(scope)) == 0) {
          return absl::OkStatus();
        }
        return absl::PermissionDeniedError(absl::StrCat("store scope \"", scope, "\": refused"));
      }};

  // A context carrying the credential of `scope` (a forged token when `token` is given).
  std::unique_ptr<grpc::ClientContext> As(const std::string& scope,
                                          std::optional<std::string> token = std::nullopt) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->AddMetadata(store::GrpcStore::kScopeMetadata, scope);
    context->AddMetadata(store::GrpcStore::kTokenMetadata,
                         token.value_or(credentials_.TokenFor(scope)));
    return context;
  }
  grpc::Status Set(grpc::ClientContext* context, const std::string& key, const std::string& value) {
    v1::SetRequest request;
    request.set_key(key);
    request.set_value(value);
    v1::SetResponse response;
    return stub_->Set(context, request, &response);
  }
  std::string Value(const std::string& key) {
    auto value = durable_.Get(key, absl::ZeroDuration());
    return value.ok() ? *value : "<absent>";
  }
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::StoreService::Stub> stub_;
};

// The token is not enough where the scope check refuses the caller (with TLS: a worker that holds
// no rank of the attempt): every RPC is PERMISSION_DENIED and the keys stay as they were.
TEST_F(StoreServiceTest, TheScopeCheckRefusesEvenWithTheRightToken) {
  const std::string key = absl::StrCat(kScopeA, "/rank0");
  ASSERT_TRUE(Set(As(kScopeA).get(), key, "a's address").ok());
  {
    absl::MutexLock lock(&refused_mu_);
    refused_.insert(kScopeA);
  }
  const grpc::Status set = Set(As(kScopeA).get(), key, "mallory");
  EXPECT_EQ(set.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(set.error_message().find("refused"), std::string::npos) << set.error_message();
  auto context = As(kScopeA);
  v1::WaitRequest wait;
  wait.add_keys(key);
  v1::WaitResponse waited;
  EXPECT_EQ(stub_->Wait(context.get(), wait, &waited).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Value(key), "a's address");
}

TEST_F(StoreServiceTest, OnlyAnAttemptsOwnCredentialReachesItsKeys) {
  const std::string b_key = absl::StrCat(kScopeB, "/rank0");
  ASSERT_TRUE(Set(As(kScopeB).get(), b_key, "b's address").ok());
  // No credential at all.
  grpc::ClientContext bare;
  EXPECT_EQ(Set(&bare, b_key, "mallory").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // B's scope with a forged token, and A's token presented for B's scope.
  EXPECT_EQ(Set(As(kScopeB, std::string(64, '0')).get(), b_key, "mallory").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Set(As(kScopeB, credentials_.TokenFor(kScopeA)).get(), b_key, "mallory").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // A's own credential on B's key: every RPC refuses.
  const grpc::Status set = Set(As(kScopeA).get(), b_key, "mallory");
  EXPECT_EQ(set.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(set.error_message().find("is outside \"jobs/a/attempt-1/\""), std::string::npos)
      << set.error_message();
  {
    auto context = As(kScopeA);
    v1::GetRequest request;
    request.set_key(b_key);
    v1::GetResponse response;
    EXPECT_EQ(stub_->Get(context.get(), request, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_FALSE(response.found());
  }
  {
    auto context = As(kScopeA);
    v1::DeleteRequest request;
    request.set_key(b_key);
    v1::DeleteResponse response;
    EXPECT_EQ(stub_->Delete(context.get(), request, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    auto context = As(kScopeA);
    v1::CompareSetRequest request;
    request.set_key(b_key);
    request.set_expected_value("b's address");
    request.set_desired_value("mallory");
    v1::CompareSetResponse response;
    EXPECT_EQ(stub_->CompareSet(context.get(), request, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    auto context = As(kScopeA);
    v1::AddRequest request;
    request.set_key(b_key);
    request.set_delta(1);
    v1::AddResponse response;
    EXPECT_EQ(stub_->Add(context.get(), request, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    auto context = As(kScopeA);
    v1::WaitRequest request;
    request.add_keys(absl::StrCat(kScopeA, "/mine"));
    request.add_keys(b_key);
    v1::WaitResponse response;
    const grpc::Status wait = stub_->Wait(context.get(), request, &response);
    EXPECT_EQ(wait.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_NE(wait.error_message().find("keys[1]"), std::string::npos) << wait.error_message();
  }
  EXPECT_EQ(Value(b_key), "b's address") << "B's key unchanged";
  // A's own keys work.
  EXPECT_TRUE(Set(As(kScopeA).get(), absl::StrCat(kScopeA, "/rank0"), "a's address").ok());
  EXPECT_EQ(Value(absl::StrCat(kScopeA, "/rank0")), "a's address");
}

TEST_F(StoreServiceTest, AWaitEndsAtTheServicesBound) {
  for (const bool with_timeout : {false, true}) {
    auto context = As(kScopeA);
    v1::WaitRequest request;
    request.add_keys(absl::StrCat(kScopeA, "/never"));
    if (with_timeout) request.mutable_timeout()->set_seconds(3600);
    v1::WaitResponse response;
    const absl::Time start = absl::Now();
    const grpc::Status status = stub_->Wait(context.get(), request, &response);
    const absl::Duration took = absl::Now() - start;
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << with_timeout;
    EXPECT_GE(took, kBound) << with_timeout;
    EXPECT_LT(took, kBound + absl::Seconds(5)) << with_timeout;
  }
}

TEST_F(StoreServiceTest, TheLargestValueFitsTheWireAndOneByteMoreIsRefusedByName) {
  for (const size_t size :
       {StoreServiceImpl::kMaxValueBytes, StoreServiceImpl::kMaxValueBytes + 1}) {
    const grpc::Status status =
        Set(As(kScopeA).get(), absl::StrCat(kScopeA, "/big"), std::string(size, 'x'));
    if (size == StoreServiceImpl::kMaxValueBytes) {
      EXPECT_TRUE(status.ok()) << status.error_message();
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
      EXPECT_NE(
          status.error_message().find("value: value of 1048577 bytes is over the limit of 1048576 "
                                      "(kMaxStoreValueBytes)"),
          std::string::npos)
          << status.error_message();
    }
  }
}

}  // namespace
}  // namespace dstrain::coordinator
