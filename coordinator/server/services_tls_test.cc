// The coordinator's port as main.cc builds it — TLS, worker certificates verified when presented,
// the Authorizer at the door — driven by hostile and honest clients over 127.0.0.1: each refused
// call gets its code and leaves the job as it was.
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "common/tls/testing/test_pki.h"
#include "common/tls/tls.h"
#include "coordinator/auth/authorizer.h"
#include "coordinator/auth/token_table.h"
#include "coordinator/server/services.h"
#include "coordinator/state/mem_kv_db.h"

namespace dstrain::coordinator {
namespace {

using ::dstrain::testing::IsOk;
using tls::testing::TestPki;

const char* kSpec = R"({"train_micro_batch_size_per_gpu": 1,
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
    "model": {"type": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 16,
              "block_size": 8},
    "data": {"train": "/data/train.bin"}, "job": {"world_size": 1, "train_steps": 3}})";

constexpr char kAlice[] = "alice-token-0123456789", kBob[] = "bob-token-0123456789";
constexpr char kVera[] = "vera-token-0123456789";

class ServicesTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) / "services_tls";
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto pki = TestPki::Create(dir_.string());
    ASSERT_THAT(pki, IsOk());
    pki_ = std::make_unique<TestPki>(*std::move(pki));
    auto server_files = pki_->Issue("coordinator", {}, "server");
    auto w1 = pki_->Issue("worker:w1", {}, "w1");
    auto w2 = pki_->Issue("worker:w2", {}, "w2");
    ASSERT_THAT(server_files, IsOk());
    ASSERT_THAT(w1, IsOk());
    ASSERT_THAT(w2, IsOk());
    w1_ = *w1;
    w2_ = *w2;

    auto parsed = TokenTable::Parse(absl::StrCat(TokenFileLine(kAlice, "alice", kSubmitter), "\n",
                                                 TokenFileLine(kBob, "bob", kSubmitter), "\n",
                                                 TokenFileLine(kVera, "vera", kViewer), "\n"),
                                    "test tokens");
    ASSERT_THAT(parsed, IsOk());
    tokens_ = std::make_shared<const TokenTable>(*std::move(parsed));
    auto credentials = tls::ServerCredentials(pki_->Config(*server_files),
                                              tls::ClientCertificates::kVerifyIfPresented);
    ASSERT_THAT(credentials, IsOk());
    (*credentials)->SetAuthMetadataProcessor(std::make_shared<Authorizer>(tokens_));

    CoordinatorOptions options;
    options.limits.data_root = "/data";
    auto c = Coordinator::Create(&state_, &clock_, options);
    ASSERT_THAT(c, IsOk());
    coordinator_ = *std::move(c);
    jobs_ = std::make_unique<JobServiceImpl>(coordinator_.get(), &metrics_, tokens_.get());
    workers_ = std::make_unique<WorkerServiceImpl>(coordinator_.get(), &metrics_, tokens_.get());
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *credentials, &port_);
    builder.RegisterService(jobs_.get());
    builder.RegisterService(workers_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    // One channel for every token: its calls share a connection, which is how a handler reading
    // another call's identity would show.
    const std::shared_ptr<grpc::Channel> people = Channel();
    jobs_stub_ = v1::JobService::NewStub(people);
    workers_stub_ = v1::WorkerService::NewStub(people);
  }
  void TearDown() override {
    coordinator_->Shutdown();
    server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  // A channel trusting the test CA, presenting `files` when given.
  std::shared_ptr<grpc::Channel> Channel(const TestPki::Files* files = nullptr) {
    tls::TlsConfig config{false, pki_->ca_cert(), "", ""};
    if (files != nullptr) config = pki_->Config(*files);
    auto credentials = tls::ChannelCredentials(config);
    EXPECT_THAT(credentials, IsOk());
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), *credentials);
  }
  // A call context carrying `token` as a bearer token ("" for none).
  static std::unique_ptr<grpc::ClientContext> As(const std::string& token) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!token.empty()) context->set_credentials(grpc::AccessTokenCredentials(token));
    return context;
  }
  grpc::Status Submit(const std::string& token, const std::string& id) {
    v1::SubmitJobRequest request;
    request.set_job_id(id);
    request.set_spec_json(kSpec);
    v1::SubmitJobResponse response;
    return jobs_stub_->SubmitJob(As(token).get(), request, &response);
  }
  grpc::Status GetJob(const std::string& token, const std::string& id, v1::Job* job = nullptr) {
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::GetJobResponse response;
    grpc::Status s = jobs_stub_->GetJob(As(token).get(), request, &response);
    if (job != nullptr) *job = response.job();
    return s;
  }
  v1::JobState State(const std::string& id) {
    auto job = coordinator_->GetJob([&] {
      v1::GetJobRequest r;
      r.set_job_id(id);
      return r;
    }());
    return job.ok() ? job->job().state() : v1::JOB_STATE_UNSPECIFIED;
  }

  std::filesystem::path dir_;
  std::unique_ptr<TestPki> pki_;
  std::shared_ptr<const TokenTable> tokens_;
  TestPki::Files w1_, w2_;
  MemKvDb db_;
  CoordinatorState state_{&db_};
  FakeClock clock_;
  prometheus::Registry registry_;
  RpcMetrics metrics_{&registry_};
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<JobServiceImpl> jobs_;
  std::unique_ptr<WorkerServiceImpl> workers_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::unique_ptr<v1::JobService::Stub> jobs_stub_;  // trusting the CA, no client certificate
  std::unique_ptr<v1::WorkerService::Stub> workers_stub_;
};

TEST_F(ServicesTlsTest, PlaintextAndMissingOrUnknownTokensAreRefused) {
  auto plain = v1::JobService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
  v1::ListJobsResponse listed;
  EXPECT_EQ(plain->ListJobs(As("").get(), v1::ListJobsRequest(), &listed).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  v1::JobService::Stub* stub = jobs_stub_.get();
  EXPECT_EQ(stub->ListJobs(As("").get(), v1::ListJobsRequest(), &listed).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(
      stub->ListJobs(As("not-a-token-of-ours").get(), v1::ListJobsRequest(), &listed).error_code(),
      grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Submit("", "job").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // Two tokens in one call: neither is taken.
  auto twice = As("");
  twice->AddMetadata("authorization", absl::StrCat("Bearer ", kVera));
  twice->AddMetadata("authorization", absl::StrCat("Bearer ", kAlice));
  EXPECT_EQ(stub->ListJobs(twice.get(), v1::ListJobsRequest(), &listed).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // A worker certificate is no token: it cannot submit either.
  v1::SubmitJobRequest request;
  request.set_job_id("job");
  request.set_spec_json(kSpec);
  v1::SubmitJobResponse response;
  EXPECT_EQ(v1::JobService::NewStub(Channel(&w1_))
                ->SubmitJob(As("").get(), request, &response)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(State("job"), v1::JOB_STATE_UNSPECIFIED) << "nothing was stored";
  ASSERT_TRUE(stub->ListJobs(As(kVera).get(), v1::ListJobsRequest(), &listed).ok());
}

// Calls with different tokens share one connection here (jobs_stub_), which is how a handler
// reading another call's identity would show.
TEST_F(ServicesTlsTest, RolesAndOwnershipOnTheWire) {
  EXPECT_EQ(Submit(kVera, "v-job").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(Submit(kAlice, "a-job").ok());
  v1::Job job;
  ASSERT_TRUE(GetJob(kAlice, "a-job", &job).ok());
  EXPECT_EQ(job.owner(), "alice");
  EXPECT_EQ(GetJob(kBob, "a-job").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(GetJob(kVera, "a-job").ok());

  v1::JobService::Stub* stub = jobs_stub_.get();
  v1::CancelJobRequest cancel;
  cancel.set_job_id("a-job");
  v1::CancelJobResponse cancelled;
  for (const char* token : {kBob, kVera}) {
    EXPECT_EQ(stub->CancelJob(As(token).get(), cancel, &cancelled).error_code(),
              grpc::StatusCode::PERMISSION_DENIED)
        << token;
  }
  EXPECT_EQ(State("a-job"), v1::JOB_STATE_PENDING);
  v1::DeleteJobRequest del;
  del.set_job_id("a-job");
  v1::DeleteJobResponse deleted;
  EXPECT_EQ(stub->DeleteJob(As(kBob).get(), del, &deleted).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  const grpc::Status own = stub->CancelJob(As(kAlice).get(), cancel, &cancelled);
  ASSERT_TRUE(own.ok()) << own.error_message();
  ASSERT_TRUE(GetJob(kAlice, "a-job", &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  ASSERT_TRUE(stub->DeleteJob(As(kAlice).get(), del, &deleted).ok());
  EXPECT_EQ(GetJob(kAlice, "a-job").error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServicesTlsTest, AWorkerCertificateActsOnlyAsItsWorker) {
  auto as_w1 = v1::WorkerService::NewStub(Channel(&w1_));
  auto as_w2 = v1::WorkerService::NewStub(Channel(&w2_));
  v1::RegisterWorkerRequest reg;
  reg.set_worker_id("w1");
  reg.set_hostname("host");
  reg.set_cpu_slots(1);
  v1::RegisterWorkerResponse registered;
  // A token is no worker certificate, and w2's certificate is not w1's.
  EXPECT_EQ(workers_stub_->RegisterWorker(As(kAlice).get(), reg, &registered).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(as_w2->RegisterWorker(As("").get(), reg, &registered).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(coordinator_->ListWorkers().workers().empty());
  ASSERT_TRUE(as_w1->RegisterWorker(As("").get(), reg, &registered).ok());
  ASSERT_TRUE(Submit(kAlice, "job").ok());
  ASSERT_EQ(State("job"), v1::JOB_STATE_SCHEDULED);

  v1::ReportStatusRequest report;
  report.set_worker_id("w1");
  report.set_job_id("job");
  report.set_attempt(1);
  report.set_rank(0);
  report.set_state(v1::RANK_STATE_SUCCEEDED);
  v1::ReportStatusResponse reported;
  EXPECT_EQ(as_w2->ReportStatus(As("").get(), report, &reported).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(State("job"), v1::JOB_STATE_SCHEDULED) << "the forged report changed the job";
  // Viewers and submitters see the workers; a worker sees them too.
  v1::ListWorkersResponse listed;
  EXPECT_TRUE(workers_stub_->ListWorkers(As(kVera).get(), v1::ListWorkersRequest(), &listed).ok());
  EXPECT_TRUE(as_w2->ListWorkers(As("").get(), v1::ListWorkersRequest(), &listed).ok());
  report.set_state(v1::RANK_STATE_RUNNING);
  const grpc::Status holder = as_w1->ReportStatus(As("").get(), report, &reported);
  ASSERT_TRUE(holder.ok()) << holder.error_message();
  EXPECT_EQ(State("job"), v1::JOB_STATE_RUNNING);
}

}  // namespace
}  // namespace dstrain::coordinator
