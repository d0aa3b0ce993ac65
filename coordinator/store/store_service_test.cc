// StoreService on the wire, against a hostile caller: a Wait without a timeout (or with a huge
// one) ends at the service's bound instead of holding a server thread for good; the largest
// value the service accepts travels within gRPC's default receive limit, and one byte more is the
// service's INVALID_ARGUMENT naming the field, not a transport error.
#include "coordinator/store/store_service.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

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
  NullLog log_;
  DurableStore durable_{&log_, {}};
  StoreServiceImpl service_{&durable_, kBound};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::StoreService::Stub> stub_;
};

TEST_F(StoreServiceTest, AWaitEndsAtTheServicesBound) {
  for (const bool with_timeout : {false, true}) {
    grpc::ClientContext context;
    v1::WaitRequest request;
    request.add_keys("never");
    if (with_timeout) request.mutable_timeout()->set_seconds(3600);
    v1::WaitResponse response;
    const absl::Time start = absl::Now();
    const grpc::Status status = stub_->Wait(&context, request, &response);
    const absl::Duration took = absl::Now() - start;
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << with_timeout;
    EXPECT_GE(took, kBound) << with_timeout;
    EXPECT_LT(took, kBound + absl::Seconds(5)) << with_timeout;
  }
}

TEST_F(StoreServiceTest, TheLargestValueFitsTheWireAndOneByteMoreIsRefusedByName) {
  for (const size_t size :
       {StoreServiceImpl::kMaxValueBytes, StoreServiceImpl::kMaxValueBytes + 1}) {
    grpc::ClientContext context;
    v1::SetRequest request;
    request.set_key("big");
    request.set_value(std::string(size, 'x'));
    v1::SetResponse response;
    const grpc::Status status = stub_->Set(&context, request, &response);
    if (size == StoreServiceImpl::kMaxValueBytes) {
      EXPECT_TRUE(status.ok()) << status.error_message();
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_NE(status.error_message().find("value: value of 1048577 bytes (at most 1048576)"),
                std::string::npos)
          << status.error_message();
    }
  }
}

}  // namespace
}  // namespace dstrain::coordinator
