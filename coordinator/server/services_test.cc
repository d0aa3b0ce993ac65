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
    workers_ = std::make_unique<WorkerServiceImpl>(coordinator_.get(), &metrics_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(jobs_.get());
    builder.RegisterService(workers_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    auto channel =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
    stub_ = v1::JobService::NewStub(channel);
    worker_stub_ = v1::WorkerService::NewStub(channel);
  }
  void TearDown() override {
    coordinator_->Shutdown();
    server_->Shutdown();
  }

  grpc::Status Submit(const std::string& id, const std::string& spec,
                      v1::SubmitJobResponse* response = nullptr) {
    grpc::ClientContext context;
    v1::SubmitJobRequest request;
    request.set_job_id(id);
    request.set_spec_json(spec);
    v1::SubmitJobResponse ignored;
    return stub_->SubmitJob(&context, request, response != nullptr ? response : &ignored);
  }

  grpc::Status Register(const v1::RegisterWorkerRequest& request) {
    grpc::ClientContext context;
    v1::RegisterWorkerResponse response;
    return worker_stub_->RegisterWorker(&context, request, &response);
  }

  MemKvDb db_;
  CoordinatorState state_{&db_};
  FakeClock clock_;
  prometheus::Registry registry_;
  RpcMetrics metrics_{&registry_};
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<JobServiceImpl> jobs_;
  std::unique_ptr<WorkerServiceImpl> workers_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::JobService::Stub> stub_;
  std::unique_ptr<v1::WorkerService::Stub> worker_stub_;
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

// GPU slots on the wire: a registration with GPUs is stored and listed, a bad one is
// INVALID_ARGUMENT naming the field, a cuda job comes back queued with its reason and runs once
// the GPUs are there, and /metrics counts the slots by kind.
TEST_F(ServicesTest, GpuWorkersAndACudaJob) {
  v1::RegisterWorkerRequest gpu_worker;
  gpu_worker.set_worker_id("gpu-a");
  gpu_worker.set_cpu_slots(1);
  for (int i = 0; i < 2; ++i) {
    v1::GpuInfo* gpu = gpu_worker.add_gpus();
    gpu->set_index(i);
    gpu->set_name("NVIDIA H200");
    gpu->set_memory_bytes(int64_t{143} << 30);
  }
  v1::RegisterWorkerRequest bad = gpu_worker;
  bad.set_worker_id("gpu-bad");
  bad.mutable_gpus(1)->set_index(0);
  const grpc::Status refused = Register(bad);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find("gpus[1].index"), std::string::npos)
      << refused.error_message();
  ASSERT_TRUE(Register(gpu_worker).ok());

  const std::string cuda =
      absl::StrReplaceAll(kGood, {{R"("world_size": 2)", R"("world_size": 4, "device": "cuda")"}});
  v1::SubmitJobResponse submitted;
  ASSERT_TRUE(Submit("on-gpus", cuda, &submitted).ok());
  EXPECT_EQ(submitted.job().state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(submitted.job().device(), v1::JOB_DEVICE_CUDA);
  EXPECT_EQ(submitted.job().queue_reason(),
            "needs 4 GPU slots; 2 registered (2 free); more than the cluster has: it waits for "
            "workers to join");
  const grpc::Status bad_device =
      Submit("bad-device", absl::StrReplaceAll(cuda, {{R"("cuda")", R"("gpu")"}}));
  EXPECT_EQ(bad_device.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad_device.error_message().find("spec_json: job.device"), std::string::npos)
      << bad_device.error_message();

  {
    grpc::ClientContext context;
    v1::ListWorkersResponse listed;
    ASSERT_TRUE(worker_stub_->ListWorkers(&context, v1::ListWorkersRequest(), &listed).ok());
    ASSERT_EQ(listed.workers_size(), 1);
    ASSERT_EQ(listed.workers(0).gpus_size(), 2);
    EXPECT_EQ(listed.workers(0).gpus(1).name(), "NVIDIA H200");
    EXPECT_EQ(listed.workers(0).gpus(1).memory_bytes(), int64_t{143} << 30);
  }
  gpu_worker.set_worker_id("gpu-b");
  ASSERT_TRUE(Register(gpu_worker).ok());
  {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id("on-gpus");
    v1::GetJobResponse got;
    ASSERT_TRUE(stub_->GetJob(&context, request, &got).ok());
    EXPECT_EQ(got.job().state(), v1::JOB_STATE_SCHEDULED);
    EXPECT_EQ(got.job().queue_reason(), "");
    ASSERT_EQ(got.job().assignments_size(), 4);
    for (const v1::RankAssignment& r : got.job().assignments()) {
      EXPECT_EQ(r.slot_kind(), v1::SLOT_KIND_GPU);
    }
  }

  const std::string exposition =
      prometheus::TextSerializer().Serialize(CoordinatorCollector(coordinator_.get()).Collect());
  for (const char* line : {R"(dstrain_slots{kind="gpu",state="free"} 0)",
                           R"(dstrain_slots{kind="gpu",state="used"} 4)",
                           R"(dstrain_slots{kind="cpu",state="free"} 2)",
                           R"(dstrain_slots{kind="cpu",state="used"} 0)"}) {
    EXPECT_NE(exposition.find(line), std::string::npos) << line << "\n" << exposition;
  }
}

// The per-job and per-worker gauges the alert rules read (deploy/prometheus/alerts.yaml): how
// long a job has waited in the queue, its restart budget, its checkpoint progress; each READY
// worker's heartbeat age beside the lease. A job's series end with the job.
TEST_F(ServicesTest, PerJobAndPerWorkerGauges) {
  const auto scrape = [&] {
    return prometheus::TextSerializer().Serialize(
        CoordinatorCollector(coordinator_.get()).Collect());
  };
  const auto expect_lines = [&](const std::string& text, std::initializer_list<const char*> lines) {
    for (const char* line : lines) {
      EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
    }
  };
  v1::RegisterWorkerRequest worker;
  worker.set_worker_id("cpu-a");
  worker.set_cpu_slots(1);
  ASSERT_TRUE(Register(worker).ok());
  const std::string spec = absl::StrReplaceAll(
      kGood,
      {{R"("train_steps": 3)",
        R"("train_steps": 3, "checkpoint_every": 2, "max_restarts": 4, "checkpoint_dir": "/data/ckpt")"}});
  const grpc::Status submitted = Submit("waits", spec);
  ASSERT_TRUE(submitted.ok()) << submitted.error_message();
  clock_.Advance(absl::Seconds(90));
  std::string text = scrape();
  expect_lines(text,
               {
                   R"(dstrain_job_info{job_id="waits",state="PENDING",device="auto"} 1)",
                   R"(dstrain_job_world_size{job_id="waits"} 2)",
                   R"(dstrain_job_queued_seconds{job_id="waits"} 90)",
                   R"(dstrain_job_restarts{job_id="waits"} 0)",
                   R"(dstrain_job_max_restarts{job_id="waits"} 4)",
                   R"(dstrain_job_train_steps{job_id="waits"} 3)",
                   R"(dstrain_job_checkpoint_every_steps{job_id="waits"} 2)",
                   R"(dstrain_job_last_checkpoint_step{job_id="waits"} 0)",
                   R"(dstrain_coordinator_worker_heartbeat_age_seconds{worker_id="cpu-a"} 90)",
                   "\ndstrain_worker_lease_seconds 10\n",
               });
  EXPECT_EQ(text.find("dstrain_job_last_checkpoint_timestamp_seconds{"), std::string::npos);

  // A second slot: the job is placed and no longer counts as waiting.
  worker.set_worker_id("cpu-b");
  ASSERT_TRUE(Register(worker).ok());
  text = scrape();
  expect_lines(text, {R"(dstrain_job_info{job_id="waits",state="SCHEDULED",device="auto"} 1)",
                      R"(dstrain_job_queued_seconds{job_id="waits"} 0)",
                      R"(dstrain_coordinator_worker_heartbeat_age_seconds{worker_id="cpu-b"} 0)"});

  // A committed checkpoint moves the checkpoint gauges.
  for (int rank = 0; rank < 2; ++rank) {
    v1::RegisterShardRequest shard;
    shard.set_job_id("waits");
    shard.set_tag("step_2");
    shard.set_step(2);
    shard.set_rank(rank);
    shard.set_path(absl::StrCat("/data/ckpt/step_2/rank", rank));
    shard.set_bytes(100);
    ASSERT_THAT(coordinator_->RegisterShard(shard), IsOk());
  }
  clock_.Advance(absl::Seconds(5));
  v1::CommitCheckpointRequest commit;
  commit.set_job_id("waits");
  commit.set_tag("step_2");
  commit.set_step(2);
  commit.set_manifest_path("/data/ckpt/step_2/manifest.json");
  ASSERT_THAT(coordinator_->CommitCheckpoint(commit), IsOk());
  text = scrape();
  expect_lines(text,
               {R"(dstrain_job_last_checkpoint_step{job_id="waits"} 2)",
                R"(dstrain_job_last_checkpoint_timestamp_seconds{job_id="waits"} 1700000095)"});

  // Cancelled: its series are gone, the workers' stay.
  v1::CancelJobRequest cancel;
  cancel.set_job_id("waits");
  ASSERT_THAT(coordinator_->CancelJob(cancel), IsOk());
  text = scrape();
  EXPECT_EQ(text.find(R"(job_id="waits")"), std::string::npos) << text;
  expect_lines(text, {R"(dstrain_coordinator_worker_heartbeat_age_seconds{worker_id="cpu-a"} 95)"});
}

}  // namespace
}  // namespace dstrain::coordinator
