// The service commands against an in-process fake coordinator (a gRPC server on 127.0.0.1:0 with
// canned answers and scripted WatchJob streams): what each command sends, prints and exits with.
#include "client/cli/service_commands.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "client/cli/output.h"
#include "common/status/status_matchers.h"
#include "common/tls/testing/test_pki.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/config/config.h"

namespace dstrain::cli {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr int64_t kNow = 1746100000;  // the tests' "now", seconds since the epoch

google::protobuf::Timestamp At(int64_t seconds) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(seconds);
  return ts;
}

v1::Job MakeJob(const std::string& id, v1::JobState state, int64_t step, int64_t total) {
  v1::Job job;
  job.set_job_id(id);
  job.set_name("demo");
  job.set_world_size(2);
  job.set_state(state);
  job.set_state_reason(state == v1::JOB_STATE_RUNNING ? "AllRanksRunning" : "Submitted");
  job.set_current_step(step);
  job.set_train_steps(total);
  *job.mutable_create_time() = At(kNow - 300);
  return job;
}

v1::WatchJobResponse Event(const v1::Job& job, int64_t sequence, v1::JobState from, v1::JobState to,
                           const std::string& reason, const std::string& message = "") {
  v1::WatchJobResponse r;
  *r.mutable_job() = job;
  r.mutable_job()->set_state(to);
  v1::JobEvent* e = r.mutable_event();
  e->set_job_id(job.job_id());
  e->set_sequence(sequence);
  *e->mutable_time() = At(kNow + sequence);
  e->set_from_state(from);
  e->set_to_state(to);
  e->set_reason(reason);
  e->set_message(message);
  return r;
}

v1::WatchJobResponse Metrics(const v1::Job& job, int64_t step, double loss) {
  v1::WatchJobResponse r;
  *r.mutable_job() = job;
  r.mutable_job()->set_current_step(step);
  v1::StepMetrics* m = r.mutable_metrics();
  m->set_step(step);
  m->set_loss(loss);
  m->set_tokens_per_second(1234.0);
  m->set_step_seconds(0.5);
  *m->mutable_time() = At(kNow + 10 + step);
  return r;
}

// One scripted WatchJob call: these responses, then this status.
struct WatchScript {
  std::vector<v1::WatchJobResponse> responses;
  grpc::Status end = grpc::Status::OK;
};

// The coordinator's client-facing services with canned data. Every call is counted and its
// request kept.
class FakeCoordinator final : public v1::JobService::Service,
                              public v1::WorkerService::Service,
                              public v1::CheckpointService::Service {
 public:
  // JobService.
  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    Count(context);
    submits.push_back(*request);
    *response->mutable_job() = MakeJob(request->job_id(), v1::JOB_STATE_PENDING, 0, 10);
    response->set_created(!existing.count(request->job_id()));
    return grpc::Status::OK;
  }
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::GetJobResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    Count(context);
    get_requests.push_back(*request);
    if (request->job_id() == "bad--id") {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "job_id: must not contain --");
    }
    auto it = jobs.find(request->job_id());
    if (it == jobs.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("job ", request->job_id(), " not found"));
    }
    *response = it->second;
    return grpc::Status::OK;
  }
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    Count(context);
    list_requests.push_back(*request);
    auto it = pages.find(request->page_token());
    if (it == pages.end()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad token");
    *response = it->second;
    return grpc::Status::OK;
  }
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::CancelJobResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    Count(context);
    cancels.push_back(*request);
    if (request->job_id() == "done") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "job done has SUCCEEDED");
    }
    *response->mutable_job() = MakeJob(request->job_id(), v1::JOB_STATE_CANCELLED, 3, 10);
    return grpc::Status::OK;
  }
  grpc::Status DeleteJob(grpc::ServerContext* context, const v1::DeleteJobRequest* request,
                         v1::DeleteJobResponse*) override {
    std::lock_guard<std::mutex> lock(mu);
    Count(context);
    deletes.push_back(request->job_id());
    if (request->job_id() == "live") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "job live is RUNNING: only an ended job can be deleted");
    }
    return grpc::Status::OK;
  }
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::WatchJobResponse>* writer) override {
    WatchScript script;
    {
      std::lock_guard<std::mutex> lock(mu);
      ++calls;
      watch_requests.push_back(*request);
      if (watch_scripts.empty()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no script");
      script = watch_scripts.front();
      watch_scripts.erase(watch_scripts.begin());
    }
    for (const v1::WatchJobResponse& r : script.responses) writer->Write(r);
    return script.end;
  }
  grpc::Status GetJobLogs(grpc::ServerContext* context, const v1::GetJobLogsRequest* request,
                          grpc::ServerWriter<v1::GetJobLogsResponse>* writer) override {
    std::vector<v1::GetJobLogsResponse> batches;
    {
      std::lock_guard<std::mutex> lock(mu);
      ++calls;
      log_requests.push_back(*request);
      batches = log_batches;
    }
    for (const v1::GetJobLogsResponse& b : batches) writer->Write(b);
    return grpc::Status::OK;
  }

  // WorkerService.
  grpc::Status ListWorkers(grpc::ServerContext* context, const v1::ListWorkersRequest*,
                           v1::ListWorkersResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    Count(context);
    *response = workers;
    return grpc::Status::OK;
  }

  // CheckpointService.
  grpc::Status ListCheckpoints(grpc::ServerContext* context,
                               const v1::ListCheckpointsRequest* request,
                               v1::ListCheckpointsResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    Count(context);
    checkpoint_requests.push_back(*request);
    *response = checkpoints;
    return grpc::Status::OK;
  }

  std::mutex mu;
  int calls = 0;
  int calls_without_deadline = 0;  // unary calls without a deadline of at most 10 s
  std::set<std::string> existing;  // ids SubmitJob answers with created = false
  std::vector<v1::SubmitJobRequest> submits;
  std::map<std::string, v1::GetJobResponse> jobs;
  std::vector<v1::GetJobRequest> get_requests;
  std::map<std::string, v1::ListJobsResponse> pages;  // by page token
  std::vector<v1::ListJobsRequest> list_requests;
  std::vector<v1::CancelJobRequest> cancels;
  std::vector<std::string> deletes;
  std::vector<WatchScript> watch_scripts;
  std::vector<v1::WatchJobRequest> watch_requests;
  std::vector<v1::GetJobLogsResponse> log_batches;
  std::vector<v1::GetJobLogsRequest> log_requests;
  v1::ListWorkersResponse workers;
  v1::ListCheckpointsResponse checkpoints;
  std::vector<v1::ListCheckpointsRequest> checkpoint_requests;

 private:
  void Count(grpc::ServerContext* context) {
    ++calls;
    if (context->deadline() > std::chrono::system_clock::now() + std::chrono::seconds(11)) {
      ++calls_without_deadline;
    }
  }
};

// A FILE* that collects what is written to it.
class Capture {
 public:
  Capture() : file_(open_memstream(&buffer_, &size_)) {}
  ~Capture() {
    std::fclose(file_);
    std::free(buffer_);
  }
  FILE* file() { return file_; }
  std::string str() {
    std::fflush(file_);
    return std::string(buffer_, size_);
  }

 private:
  char* buffer_ = nullptr;
  size_t size_ = 0;
  FILE* file_;
};

struct CliResult {
  int code;
  std::string out;
  std::string err;
};

std::string TempDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
}

class ServiceCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(static_cast<v1::JobService::Service*>(&fake_));
    builder.RegisterService(static_cast<v1::WorkerService::Service*>(&fake_));
    builder.RegisterService(static_cast<v1::CheckpointService::Service*>(&fake_));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    address_ = absl::StrCat("127.0.0.1:", port);
    context_.env_coordinator = address_;
    context_.now = [] { return absl::FromUnixSeconds(kNow); };
    context_.time_zone = absl::UTCTimeZone();
    context_.reconnect_delay = absl::Milliseconds(1);
    context_.max_reconnect_delay = absl::Milliseconds(5);
    context_.random_suffix = [] { return std::string("abc123"); };
    context_.env_security = {{"DSTRAIN_INSECURE", "1"}};  // the fake serves plaintext
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  CliResult Dstrain(const std::string& command, const std::vector<std::string>& args) {
    Capture out, err;
    ServiceContext context = context_;
    context.out = out.file();
    context.err = err.file();
    const int code = RunServiceCommand(command, args, context);
    return {code, out.str(), err.str()};
  }

  int Calls() {
    std::lock_guard<std::mutex> lock(fake_.mu);
    return fake_.calls;
  }

  // A job file in its own directory with relative paths, as users write them.
  std::string WriteJob(const std::string& name, const std::string& text) {
    const std::string path = absl::StrCat(TempDir(), "/", name);
    WriteFile(path, text);
    return path;
  }

  FakeCoordinator fake_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  ServiceContext context_;
};

constexpr char kJob[] = R"({
  // comments are allowed in job files
  "train_batch_size": 8, "gradient_accumulation_steps": 2,
  "model": {"type": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 256,
            "block_size": 8, "init_from": "../models/init.bin"},
  "data": {"train": "data/train.txt", "val": "data/val.txt"},
  "job": {"train_steps": 10, "checkpoint_dir": "ckpt/demo", "checkpoint_every": 5}
})";

// ---------------------------------------------------------------------------------------------
// submit

TEST_F(ServiceCommandsTest, SubmitSendsTheSelfContainedSpec) {
  const std::string path = WriteJob("submit/jobs/my_Job.json", kJob);
  const std::string dir = std::filesystem::path(path).parent_path().string();
  CliResult r = Dstrain("submit", {path, "--world", "2", "--priority", "7"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "my-job-abc123\n");
  ASSERT_EQ(fake_.submits.size(), 1u);
  const v1::SubmitJobRequest& sent = fake_.submits[0];
  EXPECT_EQ(sent.job_id(), "my-job-abc123");
  EXPECT_EQ(sent.priority(), 7);
  const nlohmann::json spec = nlohmann::json::parse(sent.spec_json());
  EXPECT_EQ(spec["data"]["train"], dir + "/data/train.txt");
  EXPECT_EQ(spec["data"]["val"], dir + "/data/val.txt");
  EXPECT_EQ(spec["model"]["init_from"],
            std::filesystem::path(dir).parent_path().string() + "/models/init.bin");
  EXPECT_EQ(spec["job"]["checkpoint_dir"], dir + "/ckpt/demo");
  EXPECT_EQ(spec["job"]["world_size"], 2);
  EXPECT_EQ(spec["job"]["name"], "my_Job");  // the file's stem, made explicit
  // Only what the user wrote (no defaults filled in), and it validates without a base directory.
  EXPECT_FALSE(spec.contains("zero_optimization"));
  auto parsed = config::ParseJobSpec(sent.spec_json(), "");
  ASSERT_THAT(parsed, IsOk());
  EXPECT_EQ(parsed->data.train, dir + "/data/train.txt");
  EXPECT_EQ(parsed->data_parallel_size, 2);
  EXPECT_EQ(parsed->train_micro_batch_size_per_gpu, 2);
  EXPECT_EQ(fake_.calls_without_deadline, 0);
}

// job.device goes to the coordinator as written (it places the job by it), whether or not the
// job-file parser knows the key yet; the rest of the spec still validates without it.
TEST_F(ServiceCommandsTest, SubmitSendsJobDevice) {
  // kJob with its "job" block's train_steps replaced by `job_keys`, submitted from `name`.
  const auto submit = [&](const std::string& name, const std::string& job_keys) {
    return Dstrain("submit",
                   {WriteJob(absl::StrCat("submit_device/", name),
                             absl::StrReplaceAll(kJob, {{R"("train_steps": 10)", job_keys}}))});
  };
  CliResult r = submit("on_gpus.json", R"("train_steps": 10, "device": "cuda")");
  EXPECT_EQ(r.code, 0) << r.err;
  ASSERT_EQ(fake_.submits.size(), 1u);
  const nlohmann::json spec = nlohmann::json::parse(fake_.submits[0].spec_json());
  EXPECT_EQ(spec["job"]["device"], "cuda");
  EXPECT_EQ(spec["job"]["name"], "on_gpus");
  EXPECT_EQ(spec["data"]["train"], absl::StrCat(TempDir(), "/submit_device/data/train.txt"));

  r = submit("bad.json", R"("train_steps": 10, "device": "gpu")");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("job.device: must be \"auto\", \"cpu\" or \"cuda\""));
  // Another error in a job with a device is still the parser's.
  r = submit("typo.json", R"("train_stepz": 10, "device": "cpu")");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("train_stepz"));
  EXPECT_EQ(fake_.submits.size(), 1u);
}

TEST_F(ServiceCommandsTest, SubmitInlinesTheDeepSpeedConfig) {
  WriteJob("submit_ds/conf/ds.json",
           R"({"train_batch_size": 8, "gradient_accumulation_steps": 2,
               "zero_optimization": {"stage": 1}})");
  const std::string path = WriteJob("submit_ds/job.json", R"({
    "deepspeed_config": "conf/ds.json",
    "model": {"type": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 256,
              "block_size": 8},
    "data": {"train": "/abs/train.txt"},
    "job": {"name": "DS run!", "train_steps": 10}})");
  CliResult r = Dstrain("submit", {path, "--id", "ds-1"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "ds-1\n");
  ASSERT_EQ(fake_.submits.size(), 1u);
  const nlohmann::json spec = nlohmann::json::parse(fake_.submits[0].spec_json());
  EXPECT_FALSE(spec.contains("deepspeed_config"));
  EXPECT_EQ(spec["zero_optimization"]["stage"], 1);
  EXPECT_EQ(spec["train_batch_size"], 8);
  EXPECT_EQ(spec["data"]["train"], "/abs/train.txt");
  EXPECT_EQ(spec["job"]["name"], "DS run!");
}

TEST_F(ServiceCommandsTest, SubmitNotesTheKeysWithoutEffect) {
  const std::string path = WriteJob("submit_notes/job.json", R"({
    "train_batch_size": 8,
    "zero_optimization": {"stage": 2, "contiguous_gradients": true, "reduce_scatter": true},
    "fp16": {"enabled": false, "auto_cast": true},
    "model": {"type": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 256,
              "block_size": 8},
    "data": {"train": "/abs/train.txt"},
    "job": {"train_steps": 10}})");
  CliResult r = Dstrain("submit", {path, "--id", "noted"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "noted\n");  // stdout stays the id alone
  // One line per key set, in key-path order; reduce_scatter acts and is not named.
  EXPECT_EQ(r.err,
            "note: fp16.auto_cast: no effect in dstrain: it casts the model's floating-point "
            "inputs to fp16; dstrain's model takes token ids and runs each layer in the training "
            "precision already\n"
            "note: zero_optimization.contiguous_gradients: no effect in dstrain: dstrain's "
            "gradients always live in one flat buffer in the parameters' layout, so there is "
            "nothing to copy into a contiguous one\n");
  ASSERT_EQ(fake_.submits.size(), 1u);
  // The coordinator validates the same spec and comes to the same notes.
  auto parsed = config::ParseJobSpec(fake_.submits[0].spec_json(), "");
  ASSERT_THAT(parsed, IsOk());
  EXPECT_EQ(parsed->no_effect_notes.size(), 2u);
}

TEST_F(ServiceCommandsTest, SubmitOfAnInvalidJobSendsNothing) {
  const std::string path = WriteJob("invalid/job.json",
                                    R"({"train_batch_size": 8, "gradient_accumulation_steps": 2,
          "model": {"type": "gpt", "n_layer": 1, "n_head": 1, "n_embd": "8", "vocab_size": 256,
                    "block_size": 8},
          "data": {"train": "x.txt"}, "job": {"train_steps": 1}})");
  CliResult r = Dstrain("submit", {path});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("model.n_embd"));
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(Calls(), 0);

  r = Dstrain("submit", {absl::StrCat(TempDir(), "/nope.json")});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("nope.json"));
  r = Dstrain("submit", {WriteJob("ok/job.json", kJob), "--id", "9lives"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--id '9lives'"));
  EXPECT_EQ(Calls(), 0);
}

TEST_F(ServiceCommandsTest, SubmitOfAnExistingIdSaysSo) {
  fake_.existing.insert("dup");
  CliResult r = Dstrain("submit", {WriteJob("dup/job.json", kJob), "--id", "dup"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "dup\n");
  EXPECT_THAT(r.err, HasSubstr("job dup already existed"));
}

TEST_F(ServiceCommandsTest, SubmitFollowExitsZeroOnSuccess) {
  const v1::Job job = MakeJob("f-ok", v1::JOB_STATE_PENDING, 0, 10);
  fake_.watch_scripts.push_back(
      {{Event(job, 1, v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_PENDING, "Submitted"),
        Event(job, 2, v1::JOB_STATE_PENDING, v1::JOB_STATE_SCHEDULED, "GangScheduled"),
        Event(job, 3, v1::JOB_STATE_SCHEDULED, v1::JOB_STATE_RUNNING, "AllRanksRunning"),
        Metrics(job, 1, 5.5), Metrics(job, 2, 4.25),
        Event(job, 4, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED, "Completed", "10 steps")}});
  CliResult r = Dstrain("submit", {WriteJob("follow/job.json", kJob), "--id", "f-ok", "--follow"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("f-ok\n"));
  EXPECT_THAT(r.out, HasSubstr("11:46:41  PENDING  Submitted\n"));
  EXPECT_THAT(r.out, HasSubstr("PENDING -> SCHEDULED  GangScheduled"));
  EXPECT_THAT(r.out, HasSubstr("step 2/10 ["));
  // Step 1: no rate yet, so step_seconds (0.5 s) * 9 steps; step 2: the steps' times (1 s apart).
  EXPECT_THAT(r.out, HasSubstr("loss 5.5 1,234 tok/s ETA 5s\n"));
  EXPECT_THAT(r.out, HasSubstr("loss 4.25 1,234 tok/s ETA 8s\n"));
  EXPECT_THAT(r.out, HasSubstr("job f-ok SUCCEEDED: Completed: 10 steps\n"));
  EXPECT_THAT(r.out, Not(HasSubstr("\r")));  // not a terminal: plain lines
  ASSERT_EQ(fake_.watch_requests.size(), 1u);
  EXPECT_EQ(fake_.watch_requests[0].job_id(), "f-ok");
}

TEST_F(ServiceCommandsTest, SubmitFollowExitsOneOnFailure) {
  const v1::Job job = MakeJob("f-bad", v1::JOB_STATE_PENDING, 0, 10);
  fake_.watch_scripts.push_back(
      {{Event(job, 1, v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_PENDING, "Submitted"),
        Event(job, 2, v1::JOB_STATE_PENDING, v1::JOB_STATE_FAILED, "TrainerFailed",
              "rank 1 on worker w3 exited with signal 9")}});
  CliResult r =
      Dstrain("submit", {WriteJob("follow2/job.json", kJob), "--id", "f-bad", "--follow"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(
      r.out,
      HasSubstr("job f-bad FAILED: TrainerFailed: rank 1 on worker w3 exited with signal 9"));
}

// ---------------------------------------------------------------------------------------------
// watch

TEST_F(ServiceCommandsTest, WatchReconnectsFromTheLastSeenStepAndEvent) {
  const v1::Job job = MakeJob("w", v1::JOB_STATE_RUNNING, 4, 10);
  fake_.jobs["w"].mutable_job()->CopyFrom(job);
  fake_.watch_scripts.push_back(
      {{Event(job, 1, v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_PENDING, "Submitted"),
        Event(job, 2, v1::JOB_STATE_PENDING, v1::JOB_STATE_RUNNING, "AllRanksRunning"),
        Metrics(job, 4, 3.0), Metrics(job, 5, 2.5)},
       grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator restarting")});
  fake_.watch_scripts.push_back({{}, grpc::Status(grpc::StatusCode::UNAVAILABLE, "still down")});
  fake_.watch_scripts.push_back(
      {{Metrics(job, 6, 2.0),
        Event(job, 3, v1::JOB_STATE_RUNNING, v1::JOB_STATE_CANCELLED, "Cancelled", "by alice")}});
  CliResult r = Dstrain("watch", {"w"});
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("reconnecting from step 6, event 3"));
  EXPECT_THAT(r.out, HasSubstr("step 6/10"));
  EXPECT_THAT(r.out, HasSubstr("job w CANCELLED: Cancelled: by alice"));
  ASSERT_EQ(fake_.watch_requests.size(), 3u);
  EXPECT_EQ(fake_.watch_requests[0].from_step(), 4);  // the current step, not the history
  EXPECT_EQ(fake_.watch_requests[0].from_event_sequence(), 0);
  EXPECT_EQ(fake_.watch_requests[2].from_step(), 6);
  EXPECT_EQ(fake_.watch_requests[2].from_event_sequence(), 3);
}

TEST_F(ServiceCommandsTest, WatchRedrawsOneLineOnATerminal) {
  const v1::Job job = MakeJob("tty", v1::JOB_STATE_RUNNING, 0, 10);
  fake_.jobs["tty"].mutable_job()->CopyFrom(job);
  fake_.watch_scripts.push_back(
      {{Metrics(job, 1, 3.0), Metrics(job, 2, 2.0),
        Event(job, 7, v1::JOB_STATE_RUNNING, v1::JOB_STATE_RUNNING, "CheckpointCommitted",
              "step_2"),
        Metrics(job, 3, 1.0),
        Event(job, 8, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED, "Completed")}});
  context_.out_is_tty = true;
  context_.terminal_columns = 60;
  CliResult r = Dstrain("watch", {"tty"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\rstep 1/10 ["));
  EXPECT_THAT(r.out, HasSubstr("\r\x1b[K2025-05-01 11:46:47  RUNNING  CheckpointCommitted: step_2\n"
                               "\rstep 2/10"));
  // The last progress line stays above the final state.
  EXPECT_THAT(r.out, HasSubstr("\rstep 3/10"));
  EXPECT_THAT(r.out, HasSubstr("tok/s ETA 7s\x1b[K\n2025-05-01 11:46:48  RUNNING -> SUCCEEDED  "
                               "Completed\njob tty SUCCEEDED: Completed\n"));
  // No line longer than the terminal.
  std::string line;
  for (char c : r.out) {
    if (c == '\r' || c == '\n') {
      EXPECT_LE(line.size(), 59u + 3) << line;  // + the erase-line escape
      line.clear();
    } else {
      line.push_back(c);
    }
  }
}

// A wide terminal has room for the loss sparkline; a restart (steps again from 2) starts it over.
TEST_F(ServiceCommandsTest, WatchDrawsTheLossSparklineOnAWideTerminal) {
  const v1::Job job = MakeJob("spark", v1::JOB_STATE_RUNNING, 0, 10);
  fake_.jobs["spark"].mutable_job()->CopyFrom(job);
  fake_.watch_scripts.push_back(
      {{Metrics(job, 1, 3.0), Metrics(job, 2, 2.0), Metrics(job, 3, 1.0), Metrics(job, 2, 2.5),
        Metrics(job, 3, 0.5),
        Event(job, 8, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED, "Completed")}});
  context_.out_is_tty = true;
  context_.terminal_columns = 120;
  CliResult r = Dstrain("watch", {"spark"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("] 30% loss 1 \u2588\u2585\u2581 "));
  EXPECT_THAT(r.out, HasSubstr("] 30% loss 0.5 \u2588\u2581 "));
  // A log (not a terminal) gets no sparkline.
  context_.out_is_tty = false;
  fake_.watch_scripts.push_back(
      {{Metrics(job, 1, 3.0), Metrics(job, 2, 2.0),
        Event(job, 9, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED, "Completed")}});
  r = Dstrain("watch", {"spark"});
  EXPECT_THAT(r.out, Not(HasSubstr("\u2588")));
}

// plot: the stored metrics replayed by WatchJob from step 0 up to the job's latest record (not
// the records after it, nor events), drawn by matplotlib; or a --metrics-out file, with no
// coordinator at all.
TEST_F(ServiceCommandsTest, PlotDrawsAJobsStoredMetricsOrAMetricsFile) {
  v1::Job job = MakeJob("p", v1::JOB_STATE_RUNNING, 3, 10);
  *job.mutable_latest_metrics() = Metrics(job, 3, 1.0).metrics();
  fake_.jobs["p"].mutable_job()->CopyFrom(job);
  fake_.watch_scripts.push_back(
      {{Metrics(job, 1, 3.0), Metrics(job, 2, 2.0), Metrics(job, 3, 1.0), Metrics(job, 4, 0.5)}});
  const std::string svg = absl::StrCat(TempDir(), "/p.svg");
  CliResult r = Dstrain("plot", {"p", "--out", svg, "--metrics", "loss,tokens_per_s"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, svg + "\n");
  EXPECT_THAT(ReadFile(svg), HasSubstr("<svg"));
  ASSERT_EQ(fake_.watch_requests.size(), 1u);
  EXPECT_EQ(fake_.watch_requests[0].from_step(), 0);
  EXPECT_EQ(fake_.watch_requests[0].from_event_sequence(), std::numeric_limits<int64_t>::max());

  // The stream ends before the latest record: an error, no picture.
  fake_.watch_scripts.push_back({{Metrics(job, 1, 3.0)}});
  const std::string partial = absl::StrCat(TempDir(), "/partial.png");
  r = Dstrain("plot", {"p", "--out", partial});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("ended after 1 records, before step 3"));
  EXPECT_FALSE(std::filesystem::exists(partial));

  fake_.jobs["q"].mutable_job()->CopyFrom(MakeJob("q", v1::JOB_STATE_PENDING, 0, 10));
  r = Dstrain("plot", {"q"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("job q has no metrics yet (PENDING)"));
  r = Dstrain("plot", {"p", "--metrics", "loss,bogus"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--metrics: unknown metric 'bogus'"));

  // A metrics file needs no coordinator; the picture goes beside it by default.
  const int calls = Calls();
  const std::string file = absl::StrCat(TempDir(), "/run.jsonl");
  WriteFile(file,
            "{\"step\":1,\"loss\":3.0,\"lr\":0.001}\n{\"step\":2,\"loss\":2.5,\"lr\":0.002}\n");
  context_.env_coordinator = "";
  r = Dstrain("plot", {"--metrics-file", file});
  EXPECT_EQ(r.code, 0) << r.err;
  const std::string png = absl::StrCat(TempDir(), "/run.png");
  EXPECT_EQ(r.out, png + "\n");
  EXPECT_EQ(ReadFile(png).substr(1, 3), "PNG");
  EXPECT_EQ(Calls(), calls) << "no RPC for a file";
  r = Dstrain("plot", {"--metrics-file", absl::StrCat(TempDir(), "/none.jsonl")});
  EXPECT_EQ(r.code, 1);
  r = Dstrain("plot", {"p", "--metrics-file", file});
  EXPECT_EQ(r.code, 2) << "a job and a file";
}

TEST_F(ServiceCommandsTest, WatchOfAnUnknownJob) {
  CliResult r = Dstrain("watch", {"ghost"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "dstrain watch: NOT_FOUND: job ghost not found\n");
  EXPECT_TRUE(fake_.watch_requests.empty());
}

// ---------------------------------------------------------------------------------------------
// list, status, workers, checkpoints

void AddPages(FakeCoordinator* fake) {
  v1::ListJobsResponse first;
  *first.add_jobs() = MakeJob("job-c", v1::JOB_STATE_RUNNING, 120, 500);
  *first.add_jobs() = MakeJob("job-b", v1::JOB_STATE_PENDING, 0, 500);
  first.set_next_page_token("t1");
  v1::ListJobsResponse second;
  v1::Job a = MakeJob("job-a", v1::JOB_STATE_FAILED, 7, 0);
  a.set_state_reason("TrainerFailed");
  *a.mutable_create_time() = At(kNow - 3 * 86400);
  *second.add_jobs() = a;
  fake->pages[""] = first;
  fake->pages["t1"] = second;
}

TEST_F(ServiceCommandsTest, ListPagesThroughEveryPage) {
  AddPages(&fake_);
  CliResult r = Dstrain("list", {"--state", "running", "--state=pending,FAILED"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "ID      NAME   STATE     WORLD   STEP/TOTAL   AGE   REASON\n"
            "job-c   demo   RUNNING   2       120/500      5m    AllRanksRunning\n"
            "job-b   demo   PENDING   2       0/500        5m    Submitted\n"
            "job-a   demo   FAILED    2       7            3d    TrainerFailed\n");
  ASSERT_EQ(fake_.list_requests.size(), 2u);
  EXPECT_EQ(fake_.list_requests[0].page_token(), "");
  EXPECT_EQ(fake_.list_requests[1].page_token(), "t1");
  EXPECT_THAT(fake_.list_requests[1].states(),
              ElementsAre(v1::JOB_STATE_RUNNING, v1::JOB_STATE_PENDING, v1::JOB_STATE_FAILED));
  EXPECT_EQ(fake_.calls_without_deadline, 0);
}

TEST_F(ServiceCommandsTest, ListLimitAndJson) {
  AddPages(&fake_);
  CliResult r = Dstrain("list", {"--limit", "1", "-o", "json"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(fake_.list_requests.size(), 1u);
  EXPECT_EQ(fake_.list_requests[0].page_size(), 1);
  v1::ListJobsResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &parsed).ok()) << r.out;
  ASSERT_EQ(parsed.jobs_size(), 1);
  EXPECT_EQ(parsed.jobs(0).job_id(), "job-c");

  r = Dstrain("list", {"-ojson"});
  EXPECT_EQ(r.code, 0) << r.err;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &parsed).ok()) << r.out;
  EXPECT_EQ(parsed.jobs_size(), 3);
  EXPECT_EQ(parsed.next_page_token(), "");

  EXPECT_EQ(Dstrain("list", {"--state", "sleeping"}).code, 2);
  EXPECT_EQ(Dstrain("list", {"-o", "yaml"}).code, 2);
}

v1::GetJobResponse StatusFixture() {
  v1::GetJobResponse r;
  v1::Job* job = r.mutable_job();
  *job = MakeJob("st", v1::JOB_STATE_RUNNING, 120, 500);
  job->set_attempt(2);
  job->set_restarts(1);
  job->set_max_restarts(3);
  *job->mutable_start_time() = At(kNow - 200);
  for (int rank = 0; rank < 2; ++rank) {
    v1::RankAssignment* a = job->add_assignments();
    a->set_rank(rank);
    a->set_worker_id(absl::StrCat("w", rank + 1));
    a->set_slot(rank);
    a->set_slot_kind(v1::SLOT_KIND_GPU);
  }
  v1::JobEvent* e = r.add_events();
  e->set_sequence(1);
  *e->mutable_time() = At(kNow - 300);
  e->set_to_state(v1::JOB_STATE_PENDING);
  e->set_reason("Submitted");
  e = r.add_events();
  e->set_sequence(2);
  *e->mutable_time() = At(kNow - 100);
  e->set_from_state(v1::JOB_STATE_RUNNING);
  e->set_to_state(v1::JOB_STATE_RESTARTING);
  e->set_reason("LeaseExpired");
  e->set_message("worker w9 missed its heartbeats");
  v1::StepMetrics* m = r.add_metrics();
  m->set_step(120);
  m->set_loss(2.5);
  m->set_val_loss(2.75);
  m->set_lr(3e-4);
  m->set_grad_norm(0.5);
  m->set_tokens_per_second(12345.6);
  m->set_step_seconds(0.25);
  m->set_attempt(2);
  return r;
}

TEST_F(ServiceCommandsTest, StatusHumanAndJson) {
  fake_.jobs["st"] = StatusFixture();
  CliResult r = Dstrain("status", {"st"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Job:         st\n"));
  EXPECT_THAT(r.out, HasSubstr("State:       RUNNING (AllRanksRunning)\n"));
  EXPECT_THAT(r.out, HasSubstr("Step:        120/500\n"));
  EXPECT_THAT(r.out, HasSubstr("Attempt:     2 (restarts 1 of 3)\n"));
  EXPECT_THAT(r.out, HasSubstr("Created:     2025-05-01 11:41:40 (5m ago)\n"));
  EXPECT_THAT(r.out, HasSubstr("Ended:       -\n"));
  EXPECT_THAT(r.out, HasSubstr("Device:      auto\n"));
  EXPECT_THAT(r.out, Not(HasSubstr("Waiting:")));
  EXPECT_THAT(r.out, HasSubstr("  RANK   WORKER   SLOT   KIND\n  0      w1       0      gpu\n"
                               "  1      w2       1      gpu\n"));
  EXPECT_THAT(r.out, HasSubstr("  2025-05-01 11:45:00   RUNNING   RESTARTING   LeaseExpired   "
                               "worker w9 missed its heartbeats\n"));
  EXPECT_THAT(r.out, HasSubstr("-         PENDING      Submitted\n"));
  EXPECT_THAT(r.out, HasSubstr("  120    2.5    2.75       0.0003   0.5         12,346   0.250s"));
  ASSERT_EQ(fake_.get_requests.size(), 1u);
  EXPECT_GT(fake_.get_requests[0].metrics_limit(), 0);

  r = Dstrain("status", {"st", "-o", "json"});
  EXPECT_EQ(r.code, 0) << r.err;
  v1::GetJobResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &parsed).ok()) << r.out;
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(parsed, StatusFixture())) << r.out;
}

TEST_F(ServiceCommandsTest, StatusOfAQueuedJobSaysWhatItWaitsFor) {
  v1::GetJobResponse queued;
  *queued.mutable_job() = MakeJob("q", v1::JOB_STATE_PENDING, 0, 10);
  queued.mutable_job()->set_device(v1::JOB_DEVICE_CUDA);
  queued.mutable_job()->set_queue_reason("needs 4 GPU slots; 2 registered (2 free)");
  fake_.jobs["q"] = queued;
  CliResult r = Dstrain("status", {"q"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Waiting:     needs 4 GPU slots; 2 registered (2 free)\n"));
  EXPECT_THAT(r.out, HasSubstr("Device:      cuda\n"));
  EXPECT_THAT(r.out, HasSubstr("Assignments:\n  (none)\n"));
}

TEST_F(ServiceCommandsTest, StatusErrorsMapToExitCodes) {
  CliResult r = Dstrain("status", {"ghost"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "dstrain status: NOT_FOUND: job ghost not found\n");
  r = Dstrain("status", {"bad--id"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "dstrain status: INVALID_ARGUMENT: job_id: must not contain --\n");
  r = Dstrain("status", {});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("usage: dstrain status JOB"));
  r = Dstrain("status", {"st", "--bogus"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown flag --bogus"));
  r = Dstrain("status", {"st", "-x"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown flag -x"));
}

TEST_F(ServiceCommandsTest, WorkersHumanAndJson) {
  v1::Worker* w = fake_.workers.add_workers();
  w->set_worker_id("w1");
  w->set_hostname("node-1");
  w->set_cpu_slots(4);
  w->set_state(v1::WORKER_STATE_READY);
  *w->mutable_last_heartbeat_time() = At(kNow - 3);
  w->add_ranks()->set_job_id("j");
  w = fake_.workers.add_workers();
  w->set_worker_id("gpu-box");
  w->set_hostname("node-2");
  for (int i = 0; i < 3; ++i) {
    v1::GpuInfo* gpu = w->add_gpus();
    gpu->set_index(i);
    gpu->set_name(i < 2 ? "NVIDIA H200" : "NVIDIA A100");
    gpu->set_memory_bytes(i < 2 ? int64_t{140} << 30 : int64_t{80} << 30);
  }
  w->set_cpu_slots(1);
  w->set_state(v1::WORKER_STATE_LOST);
  *w->mutable_last_heartbeat_time() = At(kNow - 7200);
  CliResult r = Dstrain("workers", {});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(
      r.out,
      "ID        STATE   GPUS                                                      CPU SLOTS   "
      "USED   HEARTBEAT AGE   HOST\n"
      "w1        READY   -                                                         4           "
      "1      3s              node-1\n"
      "gpu-box   LOST    2 x NVIDIA H200 (140.0 GiB), 1 x NVIDIA A100 (80.0 GiB)   1           "
      "0      2h              node-2\n");
  r = Dstrain("workers", {"-o", "json"});
  EXPECT_EQ(r.code, 0) << r.err;
  v1::ListWorkersResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &parsed).ok()) << r.out;
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(parsed, fake_.workers));
}

TEST_F(ServiceCommandsTest, CheckpointsHumanAndJson) {
  v1::Checkpoint* c = fake_.checkpoints.add_checkpoints();
  c->set_job_id("j");
  c->set_tag("step_200");
  c->set_step(200);
  c->set_state(v1::CHECKPOINT_STATE_COMMITTED);
  c->set_total_bytes(3 * 1024 * 1024 + 512 * 1024);
  c->add_shards()->set_rank(0);
  c->add_shards()->set_rank(1);
  *c->mutable_commit_time() = At(kNow);
  c->set_path("/ckpt/j/step_200");
  c = fake_.checkpoints.add_checkpoints();
  c->set_job_id("j");
  c->set_tag("step_400");
  c->set_step(400);
  c->set_state(v1::CHECKPOINT_STATE_PENDING);
  c->set_total_bytes(100);
  c->add_shards()->set_rank(0);
  CliResult r = Dstrain("checkpoints", {"j"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "TAG        STEP   STATE       BYTES     SHARDS   COMMITTED AT          PATH\n"
            "step_200   200    COMMITTED   3.5 MiB   2        2025-05-01 11:46:40   "
            "/ckpt/j/step_200\n"
            "step_400   400    PENDING     100 B     1        -                     -\n");
  ASSERT_EQ(fake_.checkpoint_requests.size(), 1u);
  EXPECT_EQ(fake_.checkpoint_requests[0].job_id(), "j");
  r = Dstrain("checkpoints", {"j", "--output=json"});
  EXPECT_EQ(r.code, 0) << r.err;
  v1::ListCheckpointsResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &parsed).ok()) << r.out;
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(parsed, fake_.checkpoints));
}

// ---------------------------------------------------------------------------------------------
// logs, cancel

TEST_F(ServiceCommandsTest, LogsFollowPrintsEveryLineWithItsRank) {
  fake_.jobs["lg"].mutable_job()->CopyFrom(MakeJob("lg", v1::JOB_STATE_RUNNING, 1, 10));
  int64_t sequence = 0;
  for (int batch = 0; batch < 2; ++batch) {
    v1::GetJobLogsResponse b;
    for (int rank = 0; rank < 2; ++rank) {
      v1::LogLine* line = b.add_lines();
      line->set_sequence(++sequence);
      line->set_rank(rank);
      line->set_text(absl::StrCat("line ", sequence));
    }
    fake_.log_batches.push_back(b);
  }
  CliResult r = Dstrain("logs", {"lg", "-f", "--tail", "100"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "[rank 0] line 1\n[rank 1] line 2\n[rank 0] line 3\n[rank 1] line 4\n");
  ASSERT_EQ(fake_.log_requests.size(), 1u);
  EXPECT_TRUE(fake_.log_requests[0].follow());
  EXPECT_EQ(fake_.log_requests[0].tail_lines(), 100);
  EXPECT_FALSE(fake_.log_requests[0].has_rank());

  r = Dstrain("logs", {"lg", "--rank", "1"});
  EXPECT_EQ(r.code, 0) << r.err;
  ASSERT_EQ(fake_.log_requests.size(), 2u);
  EXPECT_FALSE(fake_.log_requests[1].follow());
  EXPECT_EQ(fake_.log_requests[1].rank(), 1);

  r = Dstrain("logs", {"ghost"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
}

TEST_F(ServiceCommandsTest, Cancel) {
  CliResult r = Dstrain("cancel", {"c1", "--reason", "wrong lr"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "job c1 CANCELLED\n");
  ASSERT_EQ(fake_.cancels.size(), 1u);
  EXPECT_EQ(fake_.cancels[0].job_id(), "c1");
  EXPECT_EQ(fake_.cancels[0].reason(), "wrong lr");
  r = Dstrain("cancel", {"done"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("dstrain cancel: FAILED_PRECONDITION: job done has SUCCEEDED\n"));
}

// ---------------------------------------------------------------------------------------------
// The coordinator's address.

TEST_F(ServiceCommandsTest, NoCoordinatorIsAUsageError) {
  context_.env_coordinator = "";
  CliResult r = Dstrain("workers", {});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--coordinator HOST:PORT"));
  EXPECT_THAT(r.err, HasSubstr("DSTRAIN_COORDINATOR"));
  // The flag alone is enough, and wins over the environment.
  r = Dstrain("workers", {"--coordinator", address_});
  EXPECT_EQ(r.code, 0) << r.err;
  context_.env_coordinator = "127.0.0.1:1";
  r = Dstrain("workers", {"--coordinator=" + address_});
  EXPECT_EQ(r.code, 0) << r.err;
  r = Dstrain("workers", {"--coordinator", "localhost"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("no port"));
}

TEST_F(ServiceCommandsTest, UnavailableCoordinatorHints) {
  context_.env_coordinator = "127.0.0.1:1";  // nothing listens on port 1
  for (const auto& [command, args] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"status", {"x"}},
           {"list", {}},
           {"watch", {"x"}},
           {"logs", {"x", "-f"}},
           {"cancel", {"x"}},
           {"workers", {}},
           {"checkpoints", {"x"}},
           {"submit", {WriteJob("unavail/job.json", kJob)}}}) {
    CliResult r = Dstrain(command, args);
    EXPECT_EQ(r.code, 1) << command;
    EXPECT_THAT(r.err, HasSubstr(absl::StrCat("dstrain ", command, ": UNAVAILABLE: ")));
    EXPECT_THAT(r.err, HasSubstr("is dstrain-coordinator running at 127.0.0.1:1?"));
  }
}

TEST_F(ServiceCommandsTest, DeleteRemovesAnEndedJob) {
  CliResult r = Dstrain("delete", {"old"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "job old deleted\n");
  r = Dstrain("delete", {"live"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION: job live is RUNNING"));
  EXPECT_THAT(r.err, HasSubstr("cancel the job first"));
  r = Dstrain("delete", {});
  EXPECT_EQ(r.code, 2);
  std::lock_guard<std::mutex> lock(fake_.mu);
  EXPECT_EQ(fake_.deletes, (std::vector<std::string>{"old", "live"}));
}

// Where TLS material and the token come from: flags win over the environment, --token-file over
// DSTRAIN_TOKEN over DSTRAIN_TOKEN_FILE, and a plaintext connection never carries a token.
TEST_F(ServiceCommandsTest, SecurityComesFromFlagsThenTheEnvironment) {
  const std::string dir = absl::StrCat(TempDir(), "/security");
  std::filesystem::create_directories(dir);
  auto pki = tls::testing::TestPki::Create(dir);
  ASSERT_THAT(pki, IsOk());
  const std::string ca = absl::StrCat(dir, "/ca.pem");
  WriteFile(absl::StrCat(dir, "/token"), "  from-file \nsecond line ignored\n");
  WriteFile(absl::StrCat(dir, "/other-token"), "from-env-file\n");
  std::vector<ClientSecurity> seen;
  context_.connect = [&seen](const std::string& address, const ClientSecurity& security) {
    seen.push_back(security);
    ClientSecurity plaintext;
    plaintext.tls.insecure = true;
    return ConnectToCoordinator(address, plaintext);
  };
  auto run = [&](const std::map<std::string, std::string>& env,
                 std::vector<std::string> args) -> ClientSecurity {
    context_.env_security = env;
    seen.clear();
    CliResult r = Dstrain("workers", args);
    EXPECT_EQ(r.code, 0) << r.err;
    return seen.empty() ? ClientSecurity() : seen.back();
  };
  ClientSecurity s = run({{"DSTRAIN_TLS_CA", ca}, {"DSTRAIN_TOKEN", "from-env"}}, {});
  EXPECT_FALSE(s.tls.insecure);
  EXPECT_EQ(s.tls.ca, ca);
  EXPECT_EQ(s.token, "from-env");
  s = run({{"DSTRAIN_TLS_CA", ca},
           {"DSTRAIN_TOKEN", "from-env"},
           {"DSTRAIN_TOKEN_FILE", dir + "/other-token"}},
          {"--token-file", dir + "/token"});
  EXPECT_EQ(s.token, "from-file");
  s = run({{"DSTRAIN_TLS_CA", ca}, {"DSTRAIN_TOKEN_FILE", dir + "/other-token"}}, {});
  EXPECT_EQ(s.token, "from-env-file");
  s = run({{"DSTRAIN_TLS_CA", ca}, {"DSTRAIN_TOKEN", "from-env"}}, {"--insecure"});
  EXPECT_TRUE(s.tls.insecure);
  EXPECT_EQ(s.token, "") << "a token would cross the network in plaintext";
  s = run({{"DSTRAIN_INSECURE", "1"}}, {"--tls-ca", ca});
  EXPECT_FALSE(s.tls.insecure) << "a flag wins over the environment";
  EXPECT_EQ(s.tls.ca, ca);

  context_.env_security = {};
  CliResult r = Dstrain("workers", {"--tls-ca", dir + "/missing.pem"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("missing.pem"));
  r = Dstrain("workers", {"--insecure", "--tls-ca", ca});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--insecure"));
  r = Dstrain("workers", {"--tls-ca", ca, "--token-file", dir + "/none"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("token file " + dir + "/none: cannot open"));
}

// ---------------------------------------------------------------------------------------------
// Pure helpers.

TEST(JobIds, ValidAndDefault) {
  EXPECT_TRUE(IsValidJobId("a"));
  EXPECT_TRUE(IsValidJobId("demo-1-x"));
  EXPECT_TRUE(IsValidJobId(std::string(63, 'a')));
  EXPECT_FALSE(IsValidJobId(std::string(64, 'a')));
  EXPECT_FALSE(IsValidJobId(""));
  EXPECT_FALSE(IsValidJobId("1abc"));
  EXPECT_FALSE(IsValidJobId("-abc"));
  EXPECT_FALSE(IsValidJobId("Abc"));
  EXPECT_FALSE(IsValidJobId("a_b"));

  EXPECT_EQ(DefaultJobId("demo", "abc123"), "demo-abc123");
  EXPECT_EQ(DefaultJobId("GPT-2 small (v1)", "x0x0x0"), "gpt-2-small-v1-x0x0x0");
  EXPECT_EQ(DefaultJobId("123_run", "aaaaaa"), "run-aaaaaa");
  EXPECT_EQ(DefaultJobId("__", "aaaaaa"), "job-aaaaaa");
  EXPECT_EQ(DefaultJobId("", "aaaaaa"), "job-aaaaaa");
  const std::string long_id = DefaultJobId(std::string(55, 'a') + "-bbbb", "cccccc");
  EXPECT_EQ(long_id, std::string(55, 'a') + "-cccccc");  // the cut leaves no "--"
  EXPECT_TRUE(IsValidJobId(long_id));
  EXPECT_TRUE(IsValidJobId(DefaultJobId(std::string(200, 'z'), "abcdef")));
}

TEST(Output, TableAgeBytesStates) {
  Table t({"A", "LONGER", "C"});
  t.AddRow({"xxxx", "y", "last column is not padded"});
  t.AddRow({"z"});
  EXPECT_EQ(t.Render(),
            "A      LONGER   C\n"
            "xxxx   y        last column is not padded\n"
            "z\n");
  EXPECT_EQ(FormatAge(absl::Seconds(5)), "5s");
  EXPECT_EQ(FormatAge(absl::Seconds(119)), "119s");
  EXPECT_EQ(FormatAge(absl::Minutes(5)), "5m");
  EXPECT_EQ(FormatAge(absl::Hours(5)), "5h");
  EXPECT_EQ(FormatAge(absl::Hours(72)), "3d");
  EXPECT_EQ(FormatAge(absl::Seconds(-1)), "-");
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(int64_t{5} << 40), "5.0 TiB");
  EXPECT_EQ(JobStateName(v1::JOB_STATE_RESTARTING), "RESTARTING");
  EXPECT_EQ(JobStateName(static_cast<v1::JobState>(42)), "UNKNOWN(42)");
  EXPECT_EQ(*ParseJobState("running"), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(*ParseJobState("JOB_STATE_FAILED"), v1::JOB_STATE_FAILED);
  EXPECT_THAT(ParseJobState("unspecified"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("PENDING, SCHEDULED")));
}

}  // namespace
}  // namespace dstrain::cli
