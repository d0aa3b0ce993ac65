// The services on the wire (127.0.0.1, a free port): malformed submissions come back as
// INVALID_ARGUMENT naming the key path and leave nothing behind, a good one is stored, and the
// RPC metrics count both.
#include "coordinator/server/services.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status/status_matchers.h"
#include "coordinator/state/mem_kv_db.h"

namespace dstrain::coordinator {
namespace {

using ::dstrain::testing::IsOk;

class ServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoordinatorOptions options;
    options.limits.data_root = "/data";
    auto c = Coordinator::Create(&state_, &clock_, options);
    ASSERT_THAT(c, IsOk());
    coordinator_ = *std::move(c);
    jobs_ = std::make_unique<JobServiceImpl>(coordinator_.get(), &metrics_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(jobs_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::JobService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    coordinator_->Shutdown();
    server_->Shutdown();
  }

  grpc::Status Submit(const std::string& id, const std::string& spec) {
    grpc::ClientContext context;
    v1::SubmitJobRequest request;
    request.set_job_id(id);
    request.set_spec_json(spec);
    v1::SubmitJobResponse response;
    return stub_->SubmitJob(&context, request, &response);
  }

  MemKvDb db_;
  CoordinatorState state_{&db_};
  FakeClock clock_;
  prometheus::Registry registry_;
  RpcMetrics metrics_{&registry_};
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<JobServiceImpl> jobs_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

const char* kGood = R"({"train_micro_batch_size_per_gpu": 1,
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
    "model": {"type": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 16,
              "block_size": 8},
    "data": {"train": "/data/train.bin"}, "job": {"world_size": 2, "train_steps": 3}})";

TEST_F(ServicesTest, MalformedSubmissionsAreInvalidArgumentWithTheKeyPath) {
  const std::string good = kGood;
  struct Case {
    std::string spec, path;
  };
  const Case cases[] = {
      {"[1, 2", "spec_json"},
      {good.substr(0, good.size() - 2) + R"(, "retries": 3}})", "job.retries"},
      {absl::StrReplaceAll(good, {{R"("world_size": 2)", R"("world_size": 0)"}}), "job.world_size"},
      {absl::StrReplaceAll(good, {{R"("n_embd": 8)", R"("n_embd": 4000000)"}}), "model"},
      {absl::StrReplaceAll(good, {{"/data/train.bin", "/data/../../root/secret"}}), "data.train"},
  };
  for (const Case& c : cases) {
    const grpc::Status s = Submit("bad", c.spec);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.path;
    EXPECT_NE(s.error_message().find(c.path), std::string::npos) << s.error_message();
  }
  EXPECT_EQ(Submit("Not_An_Id", good).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto stored = state_.ListJobsPage("", 10);
  ASSERT_THAT(stored, IsOk());
  EXPECT_TRUE(stored->empty()) << "a rejected submission stored something";

  ASSERT_TRUE(Submit("good", good).ok());
  stored = state_.ListJobsPage("", 10);
  ASSERT_EQ(stored->size(), 1u);
  EXPECT_EQ((*stored)[0].state(), v1::JOB_STATE_PENDING);

  const std::string exposition = prometheus::TextSerializer().Serialize(registry_.Collect());
  EXPECT_NE(exposition.find(
                R"(dstrain_coordinator_rpcs_total{code="INVALID_ARGUMENT",method="SubmitJob"} 6)"),
            std::string::npos)
      << exposition;
  EXPECT_NE(exposition.find(R"(dstrain_coordinator_rpcs_total{code="OK",method="SubmitJob"} 1)"),
            std::string::npos);
}

}  // namespace
}  // namespace dstrain::coordinator
