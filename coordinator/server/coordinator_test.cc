// The coordinator's job life, gang placement, worker streams, cancellation, restarts and input
// checks, driven directly (no wire) over an in-memory database and a fake clock.
#include "coordinator/server/coordinator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "common/clock/clock.h"
#include "common/limits/limits.h"
#include "common/status/status_matchers.h"
#include "coordinator/state/mem_kv_db.h"
#include "coordinator/state/rocks_kv_db.h"

namespace dstrain::coordinator {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::_;
using ::testing::HasSubstr;

std::string Spec(int world, const std::string& extra_job = "",
                 const std::string& train = "/data/shakespeare/train.bin") {
  return absl::StrFormat(
      R"({"train_micro_batch_size_per_gpu": 1,
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
          "model": {"type": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 16,
                    "block_size": 8},
          "data": {"train": "%s"},
          "job": {"name": "t", "world_size": %d, "train_steps": 3%s}})",
      train, world, extra_job);
}

v1::SubmitJobRequest Submit(const std::string& id, int world, int priority = 0) {
  v1::SubmitJobRequest r;
  r.set_job_id(id);
  r.set_spec_json(Spec(world));
  r.set_priority(priority);
  return r;
}

v1::RegisterWorkerRequest Worker(const std::string& id, int slots) {
  v1::RegisterWorkerRequest r;
  r.set_worker_id(id);
  r.set_hostname("host");
  r.set_cpu_slots(slots);
  return r;
}

// A worker with `gpus` GPUs (slots 0..gpus-1) and `cpu_slots` CPU slots after them.
v1::RegisterWorkerRequest GpuWorker(const std::string& id, int gpus, int cpu_slots = 0) {
  v1::RegisterWorkerRequest r = Worker(id, cpu_slots);
  for (int i = 0; i < gpus; ++i) {
    v1::GpuInfo* gpu = r.add_gpus();
    gpu->set_index(i);
    gpu->set_name("NVIDIA H200");
    gpu->set_memory_bytes(int64_t{143} << 30);
  }
  return r;
}

// A job asking for `device` (job.device) with `world` ranks.
v1::SubmitJobRequest SubmitOn(const std::string& id, int world, const std::string& device) {
  v1::SubmitJobRequest r = Submit(id, world);
  r.set_spec_json(Spec(world, absl::StrCat(R"(, "device": ")", device, R"(")")));
  return r;
}

// Collects what one worker's assignment stream delivers, on its own thread.
class StreamReader {
 public:
  StreamReader(Coordinator* c, const std::string& worker_id) {
    thread_ = std::thread([this, c, worker_id] {
      v1::StreamAssignmentsRequest request;
      request.set_worker_id(worker_id);
      status_ = c->StreamAssignments(
          request,
          [this](const v1::StreamAssignmentsResponse& r) {
            absl::MutexLock lock(&mu_);
            got_.push_back(r.assignment());
            return true;
          },
          [this] { return stop_.load(); });
    });
  }
  ~StreamReader() {
    stop_ = true;
    thread_.join();
  }
  // Waits until `n` assignments arrived (or 5 s passed) and returns them all.
  std::vector<v1::Assignment> WaitFor(size_t n) {
    absl::MutexLock lock(&mu_);
    wanted_ = n;
    mu_.AwaitWithTimeout(absl::Condition(this, &StreamReader::Enough), absl::Seconds(5));
    return got_;
  }

 private:
  bool Enough() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return got_.size() >= wanted_; }

  absl::Mutex mu_;
  std::vector<v1::Assignment> got_ ABSL_GUARDED_BY(mu_);
  size_t wanted_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<bool> stop_{false};
  absl::Status status_;
  std::thread thread_;
};

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override { Restart(); }

  // A coordinator over the same database, as after a process restart.
  void Restart() {
    c_.reset();
    state_ = std::make_unique<CoordinatorState>(&db_);
    CoordinatorOptions options;
    options.registry.lease = absl::Seconds(10);
    options.registry.heartbeat_interval = absl::Seconds(2);
    options.limits.data_root = "/data";
    options.stream_poll = absl::Milliseconds(20);
    options.restart_delay = restart_delay_;
    options.store_credentials = &store_credentials_;
    options.worker_sessions = worker_sessions_;
    options.job_ttl = job_ttl_;
    options.log_lines_per_second = log_lines_per_second_;
    options.log_burst_lines = log_burst_lines_;
    options.submissions_per_minute = submissions_per_minute_;
    options.submission_burst = submission_burst_;
    options.max_stream = max_stream_;
    auto c = Coordinator::Create(state_.get(), &clock_, options);
    ASSERT_THAT(c, IsOk());
    c_ = *std::move(c);
  }

  v1::Job Get(const std::string& id) {
    v1::GetJobRequest r;
    r.set_job_id(id);
    auto got = c_->GetJob(r);
    EXPECT_THAT(got, IsOk());
    return got.ok() ? got->job() : v1::Job();
  }

  void Report(const std::string& worker, const std::string& job, int attempt, int rank,
              v1::RankState state, int exit_code = 0) {
    v1::ReportStatusRequest r;
    r.set_worker_id(worker);
    r.set_job_id(job);
    r.set_attempt(attempt);
    r.set_rank(rank);
    r.set_state(state);
    r.set_exit_code(exit_code);
    ASSERT_THAT(c_->ReportStatus(r), IsOk());
  }

  absl::Duration restart_delay_ = absl::ZeroDuration();
  const StoreCredentials store_credentials_{std::string(32, 'x')};
  const StoreCredentials* worker_sessions_ = nullptr;  // set by the session-token test
  absl::Duration job_ttl_ = absl::ZeroDuration();      // set by the retention test
  double log_lines_per_second_ = 1000, log_burst_lines_ = 10000;
  double submissions_per_minute_ = 60, submission_burst_ = 100;
  absl::Duration max_stream_ = absl::Hours(1);
  MemKvDb db_;
  FakeClock clock_;
  std::unique_ptr<CoordinatorState> state_;
  std::unique_ptr<Coordinator> c_;
};

TEST_F(CoordinatorTest, SubmitRunSucceedWithMetricsAndFreedSlots) {
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 2)).status(), IsOk());
  StreamReader stream(c_.get(), "w1");
  auto submitted = c_->SubmitJob(Submit("job-a", 2));
  ASSERT_THAT(submitted, IsOk());
  EXPECT_TRUE(submitted->created());
  v1::Job job = Get("job-a");
  EXPECT_EQ(job.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(job.attempt(), 1);
  ASSERT_EQ(job.assignments_size(), 2);
  const auto starts = stream.WaitFor(2);
  ASSERT_EQ(starts.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(starts[r].kind(), v1::ASSIGNMENT_KIND_START);
    EXPECT_EQ(starts[r].rank(), r);
    EXPECT_EQ(starts[r].world_size(), 2);
    EXPECT_EQ(starts[r].store_prefix(), "jobs/job-a/attempt-1");
    // The attempt's store credential, which StoreService accepts for that prefix only.
    EXPECT_THAT(store_credentials_.Check(starts[r].store_prefix(), starts[r].store_token()),
                IsOk());
    EXPECT_THAT(starts[r].spec_json(), HasSubstr("/data/shakespeare/train.bin"));
  }
  Report("w1", "job-a", 1, 0, v1::RANK_STATE_RUNNING);
  EXPECT_EQ(Get("job-a").state(), v1::JOB_STATE_SCHEDULED) << "one rank is not running yet";
  Report("w1", "job-a", 1, 1, v1::RANK_STATE_RUNNING);
  EXPECT_EQ(Get("job-a").state(), v1::JOB_STATE_RUNNING);

  v1::ReportStatusRequest progress;
  progress.set_worker_id("w1");
  progress.set_job_id("job-a");
  progress.set_attempt(1);
  progress.set_rank(0);
  progress.set_state(v1::RANK_STATE_RUNNING);
  progress.mutable_metrics()->set_step(2);
  progress.mutable_metrics()->set_loss(2.5);
  v1::LogLine* line = progress.add_log_lines();
  line->set_text("step 2 | loss 2.5");
  ASSERT_THAT(c_->ReportStatus(progress), IsOk());
  job = Get("job-a");
  EXPECT_EQ(job.current_step(), 2);
  EXPECT_EQ(job.latest_metrics().loss(), 2.5);

  Report("w1", "job-a", 1, 0, v1::RANK_STATE_SUCCEEDED);
  Report("w1", "job-a", 1, 1, v1::RANK_STATE_SUCCEEDED);
  job = Get("job-a");
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.state_reason(), "Completed");
  EXPECT_EQ(c_->Stats().workers.free_slots, 2);

  // The history, metrics and logs are in the database.
  v1::GetJobRequest get;
  get.set_job_id("job-a");
  get.set_metrics_limit(10);
  auto full = c_->GetJob(get);
  ASSERT_THAT(full, IsOk());
  std::vector<std::string> reasons;
  for (const v1::JobEvent& e : full->events()) reasons.push_back(e.reason());
  EXPECT_EQ(reasons, (std::vector<std::string>{"Submitted", "GangScheduled", "AllRanksRunning",
                                               "Completed"}));
  ASSERT_EQ(full->metrics_size(), 1);
  EXPECT_EQ(full->metrics(0).attempt(), 1);
  auto logs = state_->ListLogs("job-a", 0, std::nullopt, 0, 0);
  ASSERT_THAT(logs, IsOk());
  ASSERT_EQ(logs->size(), 1u);
  EXPECT_EQ((*logs)[0].text(), "step 2 | loss 2.5");
}

TEST_F(CoordinatorTest, GangWaitsUntilEveryRankFits) {
  for (const char* w : {"w1", "w2", "w3"}) {
    ASSERT_THAT(c_->RegisterWorker(Worker(w, 1)).status(), IsOk());
  }
  ASSERT_THAT(c_->SubmitJob(Submit("big", 4)).status(), IsOk());
  EXPECT_EQ(Get("big").state(), v1::JOB_STATE_PENDING) << "3 slots never run 3 of 4 ranks";
  EXPECT_EQ(c_->Stats().workers.free_slots, 3);
  ASSERT_THAT(c_->RegisterWorker(Worker("w4", 1)).status(), IsOk());
  const v1::Job job = Get("big");
  EXPECT_EQ(job.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(job.assignments_size(), 4);
  EXPECT_EQ(c_->Stats().workers.free_slots, 0);
}

// A pipelined job keeps each pipeline's stages on one worker where the slots allow (the
// scheduler's placement order), and its job record says how many stages it has.
TEST_F(CoordinatorTest, APipelinesStagesShareAWorker) {
  for (const char* w : {"w1", "w2"}) {
    ASSERT_THAT(c_->RegisterWorker(Worker(w, 2)).status(), IsOk());
  }
  v1::SubmitJobRequest r = Submit("pipe", 4);
  r.set_spec_json(absl::StrReplaceAll(Spec(4, R"(, "pipeline_stages": 2)"),
                                      {{R"("n_layer": 1)", R"("n_layer": 2)"}}));
  ASSERT_THAT(c_->SubmitJob(r).status(), IsOk());
  const v1::Job job = Get("pipe");
  EXPECT_EQ(job.pipeline_stages(), 2);
  ASSERT_EQ(job.assignments_size(), 4);
  // rank = stage * 2 + data rank: ranks 0 and 2 form data rank 0's pipeline, 1 and 3 data
  // rank 1's.
  EXPECT_EQ(job.assignments(0).worker_id(), job.assignments(2).worker_id());
  EXPECT_EQ(job.assignments(1).worker_id(), job.assignments(3).worker_id());
  EXPECT_NE(job.assignments(0).worker_id(), job.assignments(1).worker_id());
}

TEST_F(CoordinatorTest, CancelWhileRunningStopsRanksAndFreesWorkers) {
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 2)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("first", 2)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("second", 2)).status(), IsOk());
  // A connecting stream is first sent the worker's placements: once they arrived it is live.
  StreamReader stream(c_.get(), "w1");
  ASSERT_EQ(stream.WaitFor(2).size(), 2u);
  Report("w1", "first", 1, 0, v1::RANK_STATE_RUNNING);
  Report("w1", "first", 1, 1, v1::RANK_STATE_RUNNING);
  EXPECT_EQ(Get("second").state(), v1::JOB_STATE_PENDING);
  v1::CancelJobRequest cancel;
  cancel.set_job_id("first");
  cancel.set_reason("user changed their mind");
  auto cancelled = c_->CancelJob(cancel);
  ASSERT_THAT(cancelled, IsOk());
  EXPECT_EQ(cancelled->job().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(cancelled->job().state_message(), "user changed their mind");
  // START, START (first), STOP, STOP (first), START, START (second): the freed slots went on.
  const auto got = stream.WaitFor(6);
  ASSERT_EQ(got.size(), 6u);
  EXPECT_EQ(got[2].kind(), v1::ASSIGNMENT_KIND_STOP);
  EXPECT_EQ(got[2].job_id(), "first");
  EXPECT_EQ(got[3].kind(), v1::ASSIGNMENT_KIND_STOP);
  EXPECT_EQ(got[4].job_id(), "second");
  EXPECT_EQ(Get("second").state(), v1::JOB_STATE_SCHEDULED);
  // Late reports of the cancelled job change nothing.
  Report("w1", "first", 1, 0, v1::RANK_STATE_KILLED);
  EXPECT_EQ(Get("first").state(), v1::JOB_STATE_CANCELLED);
  // Cancelling again is fine; cancelling a finished job is not.
  EXPECT_THAT(c_->CancelJob(cancel).status(), IsOk());
}

TEST_F(CoordinatorTest, DuplicateSubmitReturnsTheSameJob) {
  ASSERT_THAT(c_->SubmitJob(Submit("dup", 1)).status(), IsOk());
  auto again = c_->SubmitJob(Submit("dup", 1));
  ASSERT_THAT(again, IsOk());
  EXPECT_FALSE(again->created());
  EXPECT_EQ(again->job().job_id(), "dup");
  EXPECT_THAT(c_->SubmitJob(Submit("dup", 2)).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("dup")));
  v1::ListJobsRequest list;
  auto listed = c_->ListJobs(list);
  ASSERT_THAT(listed, IsOk());
  EXPECT_EQ(listed->jobs_size(), 1);
}

TEST_F(CoordinatorTest, MalformedSubmissionsAreRejectedNamingTheKeyAndStoreNothing) {
  struct Case {
    std::string id, spec, needle;
  };
  const std::vector<Case> cases = {
      {"bad-json", "{not json", "spec_json"},
      {"unknown-key", Spec(1, R"(, "colour": "blue")"), "job.colour"},
      {"world-zero", Spec(0), "job.world_size"},
      {"world-absurd", Spec(100000), "job.world_size"},
      {"escape", Spec(1, "", "/data/../etc/passwd"), "data.train"},
      {"outside", Spec(1, "", "/etc/shadow"), "data.train"},
      // Swap files are created and removed under nvme_path: only beneath the data root.
      {"swap-outside",
       absl::StrReplaceAll(Spec(1), {{R"({"train_micro_batch_size_per_gpu")",
                                      R"({"zero_optimization": {"stage": 3, "offload_param": )"
                                      R"({"device": "nvme", "nvme_path": "/var/lib"}}, )"
                                      R"("train_micro_batch_size_per_gpu")"}}),
       "zero_optimization.offload_param.nvme_path"},
      {"state-swap-outside",
       absl::StrReplaceAll(Spec(1), {{R"({"train_micro_batch_size_per_gpu")",
                                      R"({"zero_optimization": {"stage": 2, )"
                                      R"("offload_optimizer": {"device": "nvme", )"
                                      R"("nvme_path": "/data/../tmp"}}, )"
                                      R"("train_micro_batch_size_per_gpu")"}}),
       "zero_optimization.offload_optimizer.nvme_path"},
      {"Bad_Id", Spec(1), "job_id"},
      {"steps-absurd",
       absl::StrReplaceAll(Spec(1), {{"\"train_steps\": 3", "\"train_steps\": 999999999999999"}}),
       "job.train_steps"},
      // A path the coordinator would read on its own host: /dev/zero would exhaust its memory,
      // a FIFO hang the handler. Refused before anything is opened.
      {"reads-a-file",
       absl::StrReplaceAll(Spec(1), {{R"({"train_micro_batch_size_per_gpu")",
                                      R"({"deepspeed_config": "/dev/zero", )"
                                      R"("train_micro_batch_size_per_gpu")"}}),
       "spec_json: deepspeed_config: a submitted job must be self-contained"},
      // The same after a comment, which the job-file parser allows: the coordinator read the
      // file, and its first bytes came back in the error (found while writing
      // tests/fuzz:job_validation, whose property check fails on it).
      {"reads-a-file-after-a-comment",
       absl::StrReplaceAll(Spec(1), {{R"({"train_micro_batch_size_per_gpu")",
                                      R"(/* c */ {"deepspeed_config": "/etc/passwd", )"
                                      R"("train_micro_batch_size_per_gpu")"}}),
       "spec_json: deepspeed_config: a submitted job must be self-contained"},
  };
  for (const Case& c : cases) {
    v1::SubmitJobRequest r;
    r.set_job_id(c.id);
    r.set_spec_json(c.spec);
    EXPECT_THAT(c_->SubmitJob(r).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.needle)))
        << c.id;
  }
  auto listed = c_->ListJobs(v1::ListJobsRequest());
  ASSERT_THAT(listed, IsOk());
  EXPECT_EQ(listed->jobs_size(), 0);
  EXPECT_TRUE(state_->ListJobsPage("", 10)->empty());
}

// A caller that is not the worker holding a rank cannot speak for it: a forged SUCCEEDED, FAILED
// or log line from another worker id (registered or not) is PERMISSION_DENIED and changes
// nothing.
TEST_F(CoordinatorTest, OnlyTheAssignedWorkerReportsAboutARank) {
  for (const char* w : {"w1", "w2"}) {
    ASSERT_THAT(c_->RegisterWorker(Worker(w, 1)).status(), IsOk());
  }
  ASSERT_THAT(c_->SubmitJob(Submit("victim", 1)).status(), IsOk());
  const v1::Job before = Get("victim");
  ASSERT_EQ(before.state(), v1::JOB_STATE_SCHEDULED);
  const std::string holder = before.assignments(0).worker_id();
  const std::string other = holder == "w1" ? "w2" : "w1";
  for (const std::string& forger : {other, std::string("mallory")}) {
    for (v1::RankState state : {v1::RANK_STATE_SUCCEEDED, v1::RANK_STATE_FAILED}) {
      v1::ReportStatusRequest r;
      r.set_worker_id(forger);
      r.set_job_id("victim");
      r.set_attempt(1);
      r.set_rank(0);
      r.set_state(state);
      r.set_exit_code(state == v1::RANK_STATE_FAILED ? 1 : 0);
      r.add_log_lines()->set_text("forged");
      EXPECT_THAT(c_->ReportStatus(r),
                  StatusIs(absl::StatusCode::kPermissionDenied,
                           HasSubstr("does not hold rank 0 of job \"victim\" attempt 1")))
          << forger;
    }
  }
  const v1::Job after = Get("victim");
  EXPECT_EQ(after.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(after.attempt(), 1);
  v1::GetJobLogsRequest logs;
  logs.set_job_id("victim");
  int lines = 0;
  ASSERT_THAT(
      c_->GetJobLogs(
          logs, [&](const v1::GetJobLogsResponse& r) { return lines += r.lines_size(), true; },
          [] { return false; }),
      IsOk());
  EXPECT_EQ(lines, 0) << "no forged line reached the log";
  // The holder still can.
  Report(holder, "victim", 1, 0, v1::RANK_STATE_RUNNING);
  EXPECT_EQ(Get("victim").state(), v1::JOB_STATE_RUNNING);

  // GetJob returns at most 1000 step metrics; asking for more is refused naming the limit.
  v1::GetJobRequest get;
  get.set_job_id("victim");
  get.set_metrics_limit(1000);
  EXPECT_THAT(c_->GetJob(get).status(), IsOk());
  get.set_metrics_limit(1001);
  EXPECT_THAT(c_->GetJob(get).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("metrics_limit: 1001 is over the limit of 1000")));
}

// With session tokens, knowing a worker's id is not enough: Heartbeat, StreamAssignments and
// ReportStatus need the token of the worker's current registration. The token survives a
// coordinator restart and is replaced by a new registration of the id.
TEST_F(CoordinatorTest, WorkerCallsNeedTheRegistrationsSessionToken) {
  worker_sessions_ = &store_credentials_;
  Restart();
  auto registered = c_->RegisterWorker(Worker("w1", 1));
  ASSERT_THAT(registered, IsOk());
  const std::string token = registered->session_token();
  ASSERT_EQ(token.size(), 64u);
  auto beat = [&](const std::string& t) {
    v1::HeartbeatRequest h;
    h.set_worker_id("w1");
    h.set_session_token(t);
    return c_->Heartbeat(h).status();
  };
  EXPECT_THAT(beat(""), StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("session_token")));
  EXPECT_THAT(beat(std::string(64, 'f')), StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_THAT(beat(token), IsOk());

  v1::StreamAssignmentsRequest stream;
  stream.set_worker_id("w1");
  stream.set_session_token("forged");
  EXPECT_THAT(
      c_->StreamAssignments(
          stream, [](const v1::StreamAssignmentsResponse&) { return true; }, [] { return true; }),
      StatusIs(absl::StatusCode::kPermissionDenied, _));

  ASSERT_THAT(c_->SubmitJob(Submit("job", 1)).status(), IsOk());
  v1::ReportStatusRequest report;
  report.set_worker_id("w1");
  report.set_job_id("job");
  report.set_attempt(1);
  report.set_rank(0);
  report.set_state(v1::RANK_STATE_SUCCEEDED);
  report.set_session_token("forged");
  EXPECT_THAT(c_->ReportStatus(report), StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_EQ(Get("job").state(), v1::JOB_STATE_SCHEDULED);

  Restart();  // the token is a MAC of the stored registration: still good
  EXPECT_THAT(beat(token), IsOk());
  report.set_state(v1::RANK_STATE_RUNNING);
  report.set_session_token(token);
  EXPECT_THAT(c_->ReportStatus(report), IsOk());
  EXPECT_EQ(Get("job").state(), v1::JOB_STATE_RUNNING);

  clock_.Advance(absl::Seconds(1));
  auto again = c_->RegisterWorker(Worker("w1", 1));
  ASSERT_THAT(again, IsOk());
  EXPECT_NE(again->session_token(), token);
  EXPECT_THAT(beat(token), StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_THAT(beat(again->session_token()), IsOk());
}

// Where the data root exists on the coordinator's host, a path that reads as inside it but leads
// out through a symlink is refused at submission (the worker checks again on its own host).
TEST(SubmissionPaths, ASymlinkOutOfTheDataRootIsRefused) {
  namespace fs = std::filesystem;
  const fs::path base = fs::path(::testing::TempDir()) / "submission_paths";
  fs::remove_all(base);
  fs::create_directories(base / "root" / "data");
  fs::create_directories(base / "elsewhere");
  fs::create_symlink(base / "elsewhere", base / "root" / "escape");
  SubmissionLimits limits;
  limits.data_root = (base / "root").string();
  v1::SubmitJobRequest r;
  r.set_job_id("paths");
  r.set_spec_json(Spec(1, "", (base / "root" / "data" / "train.bin").string()));
  EXPECT_THAT(ValidateSubmission(r, limits).status(), IsOk());
  r.set_spec_json(Spec(1, "", (base / "root" / "escape" / "train.bin").string()));
  EXPECT_THAT(ValidateSubmission(r, limits).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("data.train: \"" + (base / "root" / "escape").string())));
  fs::remove_all(base);
}

// --job-ttl: a job that ended longer ago than the TTL is deleted with its events, metrics and logs;
// one that ended recently, or still runs, stays.
TEST_F(CoordinatorTest, EndedJobsGoAfterTheirTtlWithEverythingStored) {
  job_ttl_ = absl::Hours(1);
  Restart();
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 2)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("done", 1)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("running", 1)).status(), IsOk());
  const std::string done_worker = Get("done").assignments(0).worker_id();
  v1::ReportStatusRequest r;
  r.set_worker_id(done_worker);
  r.set_job_id("done");
  r.set_attempt(1);
  r.set_rank(0);
  r.set_state(v1::RANK_STATE_RUNNING);
  r.mutable_metrics()->set_step(1);
  r.add_log_lines()->set_text("step 1");
  ASSERT_THAT(c_->ReportStatus(r), IsOk());
  Report(done_worker, "done", 1, 0, v1::RANK_STATE_SUCCEEDED);
  ASSERT_EQ(Get("done").state(), v1::JOB_STATE_SUCCEEDED);

  clock_.Advance(absl::Minutes(59));
  auto expired = c_->ExpireJobs();
  ASSERT_THAT(expired, IsOk());
  EXPECT_EQ(*expired, 0);
  clock_.Advance(absl::Minutes(2));
  expired = c_->ExpireJobs();
  ASSERT_THAT(expired, IsOk());
  EXPECT_EQ(*expired, 1);
  v1::GetJobRequest get;
  get.set_job_id("done");
  EXPECT_THAT(c_->GetJob(get).status(), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_FALSE(state_->GetJob("done")->has_value());
  EXPECT_TRUE(state_->ListEvents("done", 1)->empty());
  EXPECT_TRUE(state_->ListMetrics("done", 0, 0)->empty());
  EXPECT_TRUE(state_->ListLogs("done", 0, std::nullopt, 0, 100)->empty());
  EXPECT_NE(Get("running").state(), v1::JOB_STATE_UNSPECIFIED) << "a live job stays";
  // After a restart it stays gone.
  Restart();
  EXPECT_THAT(c_->GetJob(get).status(), StatusIs(absl::StatusCode::kNotFound, _));
}

// A job's log grows at most at its rate: a burst beyond the allowance keeps the first lines and
// one line saying how many were dropped; the allowance refills with time.
TEST_F(CoordinatorTest, AChattyJobsLogIsRateLimited) {
  log_lines_per_second_ = 10;
  log_burst_lines_ = 20;
  Restart();
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 1)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("chatty", 1)).status(), IsOk());
  auto report = [&](int lines) {
    v1::ReportStatusRequest r;
    r.set_worker_id("w1");
    r.set_job_id("chatty");
    r.set_attempt(1);
    r.set_rank(0);
    r.set_state(v1::RANK_STATE_RUNNING);
    for (int i = 0; i < lines; ++i) r.add_log_lines()->set_text(absl::StrCat("line ", i));
    ASSERT_THAT(c_->ReportStatus(r), IsOk());
  };
  auto log = [&] {
    std::vector<std::string> texts;
    v1::GetJobLogsRequest request;
    request.set_job_id("chatty");
    EXPECT_THAT(c_->GetJobLogs(
                    request,
                    [&](const v1::GetJobLogsResponse& r) {
                      for (const v1::LogLine& l : r.lines()) texts.push_back(l.text());
                      return true;
                    },
                    [] { return false; }),
                IsOk());
    return texts;
  };
  report(50);
  std::vector<std::string> texts = log();
  ASSERT_EQ(texts.size(), 21u);
  EXPECT_EQ(texts[19], "line 19");
  EXPECT_EQ(texts[20],
            "[dstrain-coordinator: 30 line(s) dropped: this job's log is limited to 10 "
            "lines/s]");
  clock_.Advance(absl::Seconds(1));
  report(15);
  texts = log();
  ASSERT_EQ(texts.size(), 21u + 11u);
  EXPECT_EQ(texts[30], "line 9");
  EXPECT_THAT(texts.back(), HasSubstr("5 line(s) dropped"));
}

TEST_F(CoordinatorTest, AcceptedSpecKeepsTheNotesOfKeysWithoutEffect) {
  v1::SubmitJobRequest r;
  r.set_job_id("noted");
  r.set_spec_json(
      absl::StrReplaceAll(Spec(1), {{R"("train_micro_batch_size_per_gpu": 1,)",
                                     R"("train_micro_batch_size_per_gpu": 1, "vocabulary_size": 16,
                    "zero_optimization": {"stage": 2, "round_robin_gradients": true,
                                          "allgather_partitions": false},)"}}));
  auto submitted = c_->SubmitJob(r);
  ASSERT_THAT(submitted, IsOk());
  // The stored spec is the effective configuration, its notes included; the keys that act
  // (allgather_partitions) are not named.
  const nlohmann::json stored = nlohmann::json::parse(Get("noted").spec_json());
  std::vector<std::string> no_effect;
  for (const nlohmann::json& note : stored["notes"]) {
    if (note.get<std::string>().find(": no effect in dstrain: ") != std::string::npos) {
      no_effect.push_back(note.get<std::string>());
    }
  }
  ASSERT_EQ(no_effect.size(), 2u) << stored["notes"].dump();
  EXPECT_THAT(no_effect[0], HasSubstr("vocabulary_size: no effect in dstrain: "));
  EXPECT_THAT(no_effect[1],
              HasSubstr("zero_optimization.round_robin_gradients: no effect in dstrain: "));
  EXPECT_EQ(stored["zero_optimization"]["allgather_partitions"], false);
  // The same submission again is the same job.
  auto again = c_->SubmitJob(r);
  ASSERT_THAT(again, IsOk());
  EXPECT_FALSE(again->created());
}

TEST_F(CoordinatorTest, RestartMidQueueRestoresEveryJobAndItsOrder) {
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 1)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("running", 1)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("low", 1, 0)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("high", 1, 5)).status(), IsOk());
  Report("w1", "running", 1, 0, v1::RANK_STATE_RUNNING);
  Restart();
  EXPECT_EQ(Get("running").state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(Get("low").state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(Get("high").state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(c_->Stats().queue_depth, 2);
  // The worker kept its lease across the restart; its rank finishes and the queue moves on in
  // priority order.
  v1::HeartbeatRequest hb;
  hb.set_worker_id("w1");
  ASSERT_THAT(c_->Heartbeat(hb).status(), IsOk());
  Report("w1", "running", 1, 0, v1::RANK_STATE_SUCCEEDED);
  EXPECT_EQ(Get("running").state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Get("high").state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(Get("low").state(), v1::JOB_STATE_PENDING);
}

TEST_F(CoordinatorTest, ALapsedLeaseFailsTheJobAndARankFailureStopsTheOthers) {
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 1)).status(), IsOk());
  ASSERT_THAT(c_->RegisterWorker(Worker("w2", 1)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("lost", 2)).status(), IsOk());
  StreamReader stream1(c_.get(), "w1");
  ASSERT_EQ(stream1.WaitFor(1).size(), 1u);
  clock_.Advance(absl::Seconds(6));
  v1::HeartbeatRequest hb;
  hb.set_worker_id("w1");
  ASSERT_THAT(c_->Heartbeat(hb).status(), IsOk());
  clock_.Advance(absl::Seconds(5));  // w2 silent for 11 s > 10 s lease
  ASSERT_THAT(c_->ExpireLeases(), IsOk());
  v1::Job job = Get("lost");
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.state_reason(), "WorkerLost");
  EXPECT_THAT(job.state_message(), HasSubstr("w2"));
  const auto got = stream1.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].kind(), v1::ASSIGNMENT_KIND_STOP) << "the surviving rank is stopped";
  hb.set_worker_id("w2");
  EXPECT_THAT(c_->Heartbeat(hb).status(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("w2")));

  ASSERT_THAT(c_->SubmitJob(Submit("crash", 1)).status(), IsOk());
  ASSERT_EQ(Get("crash").state(), v1::JOB_STATE_SCHEDULED);
  Report("w1", "crash", 1, 0, v1::RANK_STATE_FAILED, 3);
  job = Get("crash");
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.state_reason(), "TrainerFailed");
  EXPECT_THAT(job.state_message(), HasSubstr("exited with status 3"));
}

TEST_F(CoordinatorTest, WatchStreamsEventsAndMetricsUntilTheEnd) {
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 1)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("watched", 1)).status(), IsOk());
  std::vector<v1::WatchJobResponse> seen;
  absl::Status watch_status;
  std::thread watcher([&] {
    v1::WatchJobRequest r;
    r.set_job_id("watched");
    watch_status = c_->WatchJob(
        r,
        [&seen](const v1::WatchJobResponse& u) {
          seen.push_back(u);
          return true;
        },
        [] { return false; });
  });
  Report("w1", "watched", 1, 0, v1::RANK_STATE_RUNNING);
  for (int step = 1; step <= 3; ++step) {
    v1::ReportStatusRequest r;
    r.set_worker_id("w1");
    r.set_job_id("watched");
    r.set_attempt(1);
    r.set_rank(0);
    r.set_state(v1::RANK_STATE_RUNNING);
    r.mutable_metrics()->set_step(step);
    ASSERT_THAT(c_->ReportStatus(r), IsOk());
  }
  Report("w1", "watched", 1, 0, v1::RANK_STATE_SUCCEEDED);
  watcher.join();
  ASSERT_THAT(watch_status, IsOk());
  std::vector<int64_t> steps;
  int events = 0;
  for (const auto& u : seen) {
    if (u.has_metrics()) steps.push_back(u.metrics().step());
    if (u.has_event()) ++events;
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(events, 4);  // Submitted, GangScheduled, AllRanksRunning, Completed
  EXPECT_EQ(seen.back().job().state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(CoordinatorTest, CheckpointCommittedOnlyWithEveryShard) {
  ASSERT_THAT(c_->SubmitJob(Submit("ckpt", 2)).status(), IsOk());
  v1::RegisterShardRequest shard;
  shard.set_job_id("ckpt");
  shard.set_tag("step_00000002");
  shard.set_step(2);
  shard.set_rank(0);
  shard.set_path("/data/ckpt/step_00000002/rank_00000.bin");
  shard.set_bytes(100);
  ASSERT_THAT(c_->RegisterShard(shard), IsOk());
  v1::CommitCheckpointRequest commit;
  commit.set_job_id("ckpt");
  commit.set_tag("step_00000002");
  commit.set_step(2);
  commit.set_manifest_path("/data/ckpt/step_00000002/manifest.json");
  EXPECT_THAT(c_->CommitCheckpoint(commit).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("1 of 2")));
  shard.set_rank(1);
  ASSERT_THAT(c_->RegisterShard(shard), IsOk());
  auto committed = c_->CommitCheckpoint(commit);
  ASSERT_THAT(committed, IsOk());
  EXPECT_EQ(committed->checkpoint().state(), v1::CHECKPOINT_STATE_COMMITTED);
  EXPECT_EQ(committed->checkpoint().path(), "/data/ckpt/step_00000002");
  v1::ListCheckpointsRequest list;
  list.set_job_id("ckpt");
  auto listed = c_->ListCheckpoints(list);
  ASSERT_THAT(listed, IsOk());
  ASSERT_EQ(listed->checkpoints_size(), 1);
  EXPECT_EQ(listed->checkpoints(0).total_bytes(), 200);
  shard.set_rank(5);
  EXPECT_THAT(c_->RegisterShard(shard),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank")));
}

TEST_F(CoordinatorTest, TheCatalogKeepsWhatTheTrainersRetentionKeeps) {
  v1::SubmitJobRequest submit = Submit("kept", 1);
  submit.set_spec_json(Spec(1, R"(, "checkpoint_dir": "/data/ckpt", "checkpoint_every": 1,
                                   "keep_last": 2)"));
  ASSERT_THAT(c_->SubmitJob(submit).status(), IsOk());
  for (int step = 1; step <= 4; ++step) {
    const std::string tag = absl::StrCat("step_", step);
    v1::RegisterShardRequest shard;
    shard.set_job_id("kept");
    shard.set_tag(tag);
    shard.set_step(step);
    shard.set_path(absl::StrCat("/data/ckpt/", tag, "/rank_00000.bin"));
    ASSERT_THAT(c_->RegisterShard(shard), IsOk());
    if (step == 3) continue;  // a save that never committed
    v1::CommitCheckpointRequest commit;
    commit.set_job_id("kept");
    commit.set_tag(tag);
    commit.set_step(step);
    commit.set_manifest_path(absl::StrCat("/data/ckpt/", tag, "/manifest.json"));
    ASSERT_THAT(c_->CommitCheckpoint(commit).status(), IsOk());
  }
  v1::ListCheckpointsRequest list;
  list.set_job_id("kept");
  auto listed = c_->ListCheckpoints(list);
  ASSERT_THAT(listed, IsOk());
  std::vector<std::string> tags;
  for (const v1::Checkpoint& c : listed->checkpoints()) tags.push_back(c.tag());
  EXPECT_EQ(tags, (std::vector<std::string>{"step_2", "step_4"}));
}

}  // namespace
}  // namespace dstrain::coordinator

namespace dstrain::coordinator {
namespace {

v1::SubmitJobRequest SubmitWithRestarts(const std::string& id, int world, int max_restarts) {
  v1::SubmitJobRequest r = Submit(id, world);
  r.set_spec_json(Spec(world, absl::StrCat(R"(, "max_restarts": )", max_restarts)));
  return r;
}

TEST_F(CoordinatorTest, RetryableFailuresRestartOnHealthyWorkersUntilRestartsRunOut) {
  for (const char* w : {"w1", "w2", "w3"}) {
    ASSERT_THAT(c_->RegisterWorker(Worker(w, 1)).status(), IsOk());
  }
  ASSERT_THAT(c_->SubmitJob(SubmitWithRestarts("flaky", 2, 2)), IsOk());
  v1::Job job = Get("flaky");
  ASSERT_EQ(job.attempt(), 1);
  const std::string first_worker = job.assignments(0).worker_id();
  // A trainer killed by a signal (128 + 9): retryable. The job is placed again at once (a third
  // worker is free) as attempt 2.
  v1::ReportStatusRequest killed;
  killed.set_worker_id(first_worker);
  killed.set_job_id("flaky");
  killed.set_attempt(1);
  killed.set_rank(0);
  killed.set_state(v1::RANK_STATE_FAILED);
  killed.set_signal(9);
  ASSERT_THAT(c_->ReportStatus(killed), IsOk());
  job = Get("flaky");
  EXPECT_EQ(job.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(job.attempt(), 2);
  EXPECT_EQ(job.restarts(), 1);
  // The other rank of attempt 1, stopped meanwhile, reports KILLED: that attempt is over.
  Report("w2", "flaky", 1, 1, v1::RANK_STATE_KILLED);
  EXPECT_EQ(Get("flaky").attempt(), 2);
  // A lost worker is retryable too.
  const std::string lost = Get("flaky").assignments(1).worker_id();
  for (const char* w : {"w1", "w2", "w3"}) {
    if (w == lost) continue;
    v1::HeartbeatRequest hb;
    hb.set_worker_id(w);
    clock_.Advance(absl::Seconds(6));
    ASSERT_THAT(c_->Heartbeat(hb).status(), IsOk());
  }
  clock_.Advance(absl::Seconds(5));
  for (const char* w : {"w1", "w2", "w3"}) {
    if (w == lost) continue;
    v1::HeartbeatRequest hb;
    hb.set_worker_id(w);
    ASSERT_THAT(c_->Heartbeat(hb).status(), IsOk());
  }
  ASSERT_THAT(c_->ExpireLeases(), IsOk());
  job = Get("flaky");
  EXPECT_EQ(job.restarts(), 2);
  EXPECT_EQ(job.attempt(), 3) << "placed again on the two healthy workers";
  for (const v1::RankAssignment& r : job.assignments()) EXPECT_NE(r.worker_id(), lost);
  // No restarts left: the next retryable failure ends it.
  v1::ReportStatusRequest again = killed;
  again.set_worker_id(job.assignments(0).worker_id());
  again.set_attempt(3);
  ASSERT_THAT(c_->ReportStatus(again), IsOk());
  job = Get("flaky");
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.state_reason(), "RestartsExhausted");
  EXPECT_THAT(job.state_message(), HasSubstr("max_restarts is 2"));
  std::vector<std::string> reasons;
  v1::GetJobRequest get;
  get.set_job_id("flaky");
  auto full = c_->GetJob(get);
  ASSERT_THAT(full, IsOk());
  for (const v1::JobEvent& e : full->events()) reasons.push_back(e.reason());
  EXPECT_EQ(reasons, (std::vector<std::string>{"Submitted", "GangScheduled", "TrainerFailed",
                                               "GangScheduled", "WorkerLost", "GangScheduled",
                                               "RestartsExhausted"}));
}

TEST_F(CoordinatorTest, ExitCodesBelow128ArePermanent) {
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 1)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(SubmitWithRestarts("buggy", 1, 5)), IsOk());
  Report("w1", "buggy", 1, 0, v1::RANK_STATE_FAILED, 3);
  const v1::Job job = Get("buggy");
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.state_reason(), "TrainerFailed");
  EXPECT_EQ(job.restarts(), 0);
  EXPECT_THAT(job.state_message(), HasSubstr("permanent"));
  // Output that arrives after the attempt ended is kept (the last lines explain the failure);
  // its state changes nothing.
  v1::ReportStatusRequest late;
  late.set_worker_id("w1");
  late.set_job_id("buggy");
  late.set_attempt(1);
  late.set_rank(0);
  late.set_state(v1::RANK_STATE_RUNNING);
  late.add_log_lines()->set_text("Traceback: the last words");
  ASSERT_THAT(c_->ReportStatus(late), IsOk());
  EXPECT_EQ(Get("buggy").state(), v1::JOB_STATE_FAILED);
  auto logs = state_->ListLogs("buggy", 0, std::nullopt, 0, 0);
  ASSERT_THAT(logs, IsOk());
  ASSERT_EQ(logs->size(), 1u);
  EXPECT_EQ((*logs)[0].text(), "Traceback: the last words");
}

TEST_F(CoordinatorTest, ADrainingWorkerGetsNoNewRanksAndARestartingJobWaitsForOthers) {
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 1)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(SubmitWithRestarts("moved", 1, 3)), IsOk());
  v1::HeartbeatRequest drain;
  drain.set_worker_id("w1");
  drain.set_draining(true);
  ASSERT_THAT(c_->Heartbeat(drain).status(), IsOk());
  // The trainer checkpointed and left (kExitDrained = 201, retryable).
  Report("w1", "moved", 1, 0, v1::RANK_STATE_FAILED, 201);
  v1::Job job = Get("moved");
  EXPECT_EQ(job.state(), v1::JOB_STATE_RESTARTING);
  // Its free slot is not free for the queue (the metrics' dstrain_slots{state="free"}).
  EXPECT_EQ(c_->Stats().workers.free_slots, 0);
  EXPECT_EQ(c_->Stats().workers.total_slots, 1);
  EXPECT_EQ(job.state_reason(), "WorkerDrained");
  EXPECT_TRUE(c_->ListWorkers().workers(0).draining());
  // Cancel works on a restarting (queued) job too, after it is placed elsewhere it would run:
  ASSERT_THAT(c_->RegisterWorker(Worker("w2", 1)).status(), IsOk());
  job = Get("moved");
  EXPECT_EQ(job.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(job.assignments(0).worker_id(), "w2");
  EXPECT_EQ(job.attempt(), 2);
}

TEST_F(CoordinatorTest, ARestartWaitsUntilADeadWorkerIsDeclaredLost) {
  restart_delay_ = absl::Seconds(10);  // the fixture's lease
  Restart();
  for (const char* w : {"w1", "w2", "w3"}) {
    ASSERT_THAT(c_->RegisterWorker(Worker(w, 1)).status(), IsOk());
  }
  ASSERT_THAT(c_->SubmitJob(SubmitWithRestarts("peer", 2, 1)), IsOk());
  ASSERT_EQ(Get("peer").assignments(1).worker_id(), "w2");
  // w2 dies; rank 0 on w1 notices first and exits "lost a peer" (200).
  Report("w1", "peer", 1, 0, v1::RANK_STATE_FAILED, 200);
  EXPECT_EQ(Get("peer").state(), v1::JOB_STATE_RESTARTING);
  for (int i = 0; i < 10; ++i) {
    clock_.Advance(absl::Seconds(1));
    for (const char* w : {"w1", "w3"}) {
      v1::HeartbeatRequest hb;
      hb.set_worker_id(w);
      ASSERT_THAT(c_->Heartbeat(hb).status(), IsOk());
    }
    ASSERT_THAT(c_->ExpireLeases(), IsOk());
    if (i < 9) {
      EXPECT_EQ(Get("peer").state(), v1::JOB_STATE_RESTARTING) << "placed too early";
    }
  }
  const v1::Job job = Get("peer");
  EXPECT_EQ(job.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(job.attempt(), 2);
  for (const v1::RankAssignment& r : job.assignments()) EXPECT_NE(r.worker_id(), "w2");
}

// A cuda job waits, with a reason naming what it needs and what exists, until enough GPU slots
// register; it then runs on GPU slots only, one rank per GPU, and the assignments say so.
TEST_F(CoordinatorTest, ACudaJobWaitsForGpuSlotsWithAReason) {
  ASSERT_THAT(c_->RegisterWorker(GpuWorker("g1", 2, /*cpu_slots=*/4)).status(), IsOk());
  ASSERT_THAT(c_->RegisterWorker(Worker("c1", 8)).status(), IsOk());
  auto submitted = c_->SubmitJob(SubmitOn("gpu-job", 4, "cuda"));
  ASSERT_THAT(submitted, IsOk());
  EXPECT_EQ(submitted->job().device(), v1::JOB_DEVICE_CUDA);
  EXPECT_EQ(submitted->job().state(), v1::JOB_STATE_PENDING) << "12 CPU slots are no GPUs";
  EXPECT_EQ(submitted->job().queue_reason(),
            "needs 4 GPU slots; 2 registered (2 free); more than the cluster has: it waits for "
            "workers to join");
  // The reason is in listings too, and the spec a trainer gets is one its parser takes.
  v1::ListJobsResponse listed = c_->ListJobs(v1::ListJobsRequest()).value();
  ASSERT_EQ(listed.jobs_size(), 1);
  EXPECT_THAT(listed.jobs(0).queue_reason(), HasSubstr("needs 4 GPU slots"));
  EXPECT_THAT(ValidateSubmission(Submit("again", 4), SubmissionLimits{"/data"}), IsOk());

  ASSERT_THAT(c_->RegisterWorker(GpuWorker("g2", 1)).status(), IsOk());
  EXPECT_THAT(Get("gpu-job").queue_reason(), HasSubstr("3 registered (3 free)"));
  // The last GPU worker joins: the gang fits, on GPU slots of the two fuller workers first.
  StreamReader g1_stream(c_.get(), "g1");
  ASSERT_THAT(c_->RegisterWorker(GpuWorker("g3", 1)).status(), IsOk());
  const v1::Job job = Get("gpu-job");
  EXPECT_EQ(job.state(), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(job.queue_reason(), "");
  ASSERT_EQ(job.assignments_size(), 4);
  const char* expected[][2] = {{"g1", "0"}, {"g1", "1"}, {"g2", "0"}, {"g3", "0"}};
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(job.assignments(r).worker_id(), expected[r][0]);
    EXPECT_EQ(absl::StrCat(job.assignments(r).slot()), expected[r][1]);
    EXPECT_EQ(job.assignments(r).slot_kind(), v1::SLOT_KIND_GPU);
  }
  const auto starts = g1_stream.WaitFor(2);
  ASSERT_EQ(starts.size(), 2u);
  for (const v1::Assignment& a : starts) {
    EXPECT_EQ(a.slot_kind(), v1::SLOT_KIND_GPU);
    EXPECT_LT(a.slot(), 2);
  }
  EXPECT_EQ(c_->Stats().workers.free_gpu_slots, 0);
  EXPECT_EQ(c_->Stats().workers.free_slots, 12);

  // A reconnecting agent is told the kinds again.
  StreamReader again(c_.get(), "g1");
  for (const v1::Assignment& a : again.WaitFor(2)) EXPECT_EQ(a.slot_kind(), v1::SLOT_KIND_GPU);
}

TEST_F(CoordinatorTest, CpuAndAutoJobsOnAGpuWorker) {
  ASSERT_THAT(c_->RegisterWorker(GpuWorker("g1", 2, /*cpu_slots=*/2)).status(), IsOk());
  StreamReader stream(c_.get(), "g1");
  ASSERT_THAT(c_->SubmitJob(SubmitOn("on-cpu", 2, "cpu")).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("plain", 2)).status(), IsOk());  // no job.device: auto
  const v1::Job cpu = Get("on-cpu");
  EXPECT_EQ(cpu.device(), v1::JOB_DEVICE_CPU);
  ASSERT_EQ(cpu.assignments_size(), 2);
  EXPECT_EQ(cpu.assignments(0).slot(), 2) << "CPU slots follow the GPU slots";
  EXPECT_EQ(cpu.assignments(1).slot(), 3);
  EXPECT_EQ(cpu.assignments(0).slot_kind(), v1::SLOT_KIND_CPU);
  const v1::Job plain = Get("plain");
  EXPECT_EQ(plain.device(), v1::JOB_DEVICE_AUTO);
  ASSERT_EQ(plain.assignments_size(), 2);
  EXPECT_EQ(plain.assignments(0).slot_kind(), v1::SLOT_KIND_GPU);
  const auto starts = stream.WaitFor(4);
  ASSERT_EQ(starts.size(), 4u);
  for (const v1::Assignment& a : starts) {
    EXPECT_EQ(a.slot_kind(), a.job_id() == "on-cpu" ? v1::SLOT_KIND_CPU : v1::SLOT_KIND_GPU);
  }
  // Every slot is taken: an auto job names both kinds in its reason.
  ASSERT_THAT(c_->SubmitJob(SubmitOn("later", 1, "auto")).status(), IsOk());
  EXPECT_EQ(Get("later").queue_reason(),
            "needs 1 GPU slot or 1 CPU slot (job.device auto); GPU: 2 registered (0 free), CPU: 2 "
            "registered (0 free)");
}

TEST_F(CoordinatorTest, JobDeviceIsCheckedAndKeptAcrossRestarts) {
  EXPECT_THAT(c_->SubmitJob(SubmitOn("bad", 1, "tpu")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("spec_json: job.device: must be \"auto\", \"cpu\" or \"cuda\"")));
  v1::SubmitJobRequest not_a_string = Submit("bad", 1);
  not_a_string.set_spec_json(Spec(1, R"(, "device": 1)"));
  EXPECT_THAT(c_->SubmitJob(not_a_string).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job.device")));
  ASSERT_THAT(c_->SubmitJob(SubmitOn("gpu", 2, "cuda")).status(), IsOk());
  // The same id with another device is another job.
  EXPECT_THAT(c_->SubmitJob(SubmitOn("gpu", 2, "cpu")).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("gpu")));
  auto same = c_->SubmitJob(SubmitOn("gpu", 2, "cuda"));
  ASSERT_THAT(same, IsOk());
  EXPECT_FALSE(same->created());
  Restart();
  ASSERT_THAT(c_->RegisterWorker(Worker("c1", 4)).status(), IsOk());
  const v1::Job job = Get("gpu");
  EXPECT_EQ(job.device(), v1::JOB_DEVICE_CUDA);
  EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING) << "a cuda job never runs on CPU slots";
  EXPECT_THAT(job.queue_reason(), HasSubstr("needs 2 GPU slots; 0 registered (0 free)"));
}

// A draining worker's GPUs count neither as free nor as registered.
TEST_F(CoordinatorTest, ADrainingGpuWorkerIsLeftOutOfTheReason) {
  ASSERT_THAT(c_->RegisterWorker(GpuWorker("g1", 2)).status(), IsOk());
  ASSERT_THAT(c_->RegisterWorker(GpuWorker("g2", 2)).status(), IsOk());
  v1::HeartbeatRequest drain;
  drain.set_worker_id("g2");
  drain.set_draining(true);
  ASSERT_THAT(c_->Heartbeat(drain).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(SubmitOn("four", 4, "cuda")).status(), IsOk());
  EXPECT_EQ(Get("four").state(), v1::JOB_STATE_PENDING);
  EXPECT_THAT(Get("four").queue_reason(), HasSubstr("2 registered (2 free)"));
}

}  // namespace
}  // namespace dstrain::coordinator

namespace dstrain::coordinator {
namespace {

Caller Person(const std::string& principal, uint32_t roles) {
  Caller caller;
  caller.principal = principal;
  caller.roles = roles;
  return caller;
}

Caller WorkerCaller(const std::string& worker) {
  Caller caller;
  caller.worker = worker;
  return caller;
}

std::vector<std::string> ListedIds(Coordinator* c, const Caller& caller) {
  auto listed = c->ListJobs(v1::ListJobsRequest(), caller);
  EXPECT_THAT(listed, IsOk());
  std::vector<std::string> ids;
  if (listed.ok()) {
    for (const v1::Job& j : listed->jobs()) ids.push_back(j.job_id());
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

// A submitter sees, cancels and deletes only its own jobs; a viewer reads every job and changes
// none; an admin does everything. The owner is recorded on the job and the principal in its
// events, and a refused call changes nothing.
TEST_F(CoordinatorTest, SubmittersOwnTheirJobsViewersReadAdminsControl) {
  const Caller alice = Person("alice", kSubmitter), bob = Person("bob", kSubmitter);
  const Caller viewer = Person("vera", kViewer), admin = Person("root", kAdmin);
  ASSERT_THAT(c_->SubmitJob(Submit("a-job", 1), alice).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("b-job", 1), bob).status(), IsOk());
  EXPECT_EQ(Get("a-job").owner(), "alice");
  // The same id from another principal is not "the same job again".
  EXPECT_THAT(c_->SubmitJob(Submit("a-job", 1), bob).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("another principal")));
  EXPECT_THAT(c_->SubmitJob(Submit("a-job", 1), alice).status(), IsOk());

  EXPECT_EQ(ListedIds(c_.get(), alice), (std::vector<std::string>{"a-job"}));
  EXPECT_EQ(ListedIds(c_.get(), bob), (std::vector<std::string>{"b-job"}));
  EXPECT_EQ(ListedIds(c_.get(), viewer), (std::vector<std::string>{"a-job", "b-job"}));
  EXPECT_EQ(ListedIds(c_.get(), admin), (std::vector<std::string>{"a-job", "b-job"}));

  v1::GetJobRequest get;
  get.set_job_id("a-job");
  EXPECT_THAT(c_->GetJob(get, alice).status(), IsOk());
  EXPECT_THAT(c_->GetJob(get, viewer).status(), IsOk());
  EXPECT_THAT(c_->GetJob(get, bob).status(), StatusIs(absl::StatusCode::kPermissionDenied, _));
  v1::GetJobLogsRequest logs;
  logs.set_job_id("a-job");
  auto no_lines = [](const v1::GetJobLogsResponse&) { return true; };
  EXPECT_THAT(c_->GetJobLogs(
                  logs, no_lines, [] { return false; }, bob),
              StatusIs(absl::StatusCode::kPermissionDenied, _));
  v1::WatchJobRequest watch;
  watch.set_job_id("a-job");
  EXPECT_THAT(
      c_->WatchJob(
          watch, [](const v1::WatchJobResponse&) { return true; }, [] { return true; }, bob),
      StatusIs(absl::StatusCode::kPermissionDenied, _));

  v1::CancelJobRequest cancel;
  cancel.set_job_id("a-job");
  for (const Caller* refused : {&bob, &viewer}) {
    EXPECT_THAT(c_->CancelJob(cancel, *refused).status(),
                StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("a-job")));
  }
  EXPECT_EQ(Get("a-job").state(), v1::JOB_STATE_PENDING) << "a refused cancel changes nothing";
  ASSERT_THAT(c_->CancelJob(cancel, alice).status(), IsOk());
  cancel.set_job_id("b-job");
  ASSERT_THAT(c_->CancelJob(cancel, admin).status(), IsOk());
  get.set_job_id("b-job");
  auto b = c_->GetJob(get, admin);
  ASSERT_THAT(b, IsOk());
  std::vector<std::string> messages;
  for (const v1::JobEvent& e : b->events()) messages.push_back(e.message());
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_THAT(messages[0], HasSubstr("by bob"));
  EXPECT_THAT(messages[1], HasSubstr("by root"));

  v1::DeleteJobRequest del;
  del.set_job_id("a-job");
  EXPECT_THAT(c_->DeleteJob(del, bob), StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_THAT(c_->DeleteJob(del, viewer), StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_EQ(Get("a-job").state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(c_->DeleteJob(del, alice), IsOk());
  EXPECT_EQ(ListedIds(c_.get(), admin), (std::vector<std::string>{"b-job"}));
}

// DeleteJob refuses a live job and removes an ended one with its events, metrics and logs, for
// good (a restart does not bring it back).
TEST_F(CoordinatorTest, DeleteJobRemovesOnlyAnEndedJobAndEverythingStored) {
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 1)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("gone", 1)).status(), IsOk());
  v1::ReportStatusRequest r;
  r.set_worker_id("w1");
  r.set_job_id("gone");
  r.set_attempt(1);
  r.set_rank(0);
  r.set_state(v1::RANK_STATE_RUNNING);
  r.mutable_metrics()->set_step(1);
  r.add_log_lines()->set_text("step 1");
  ASSERT_THAT(c_->ReportStatus(r), IsOk());
  v1::DeleteJobRequest del;
  del.set_job_id("gone");
  EXPECT_THAT(c_->DeleteJob(del), StatusIs(absl::StatusCode::kFailedPrecondition,
                                           HasSubstr("only an ended job can be deleted")));
  EXPECT_EQ(Get("gone").state(), v1::JOB_STATE_RUNNING);
  Report("w1", "gone", 1, 0, v1::RANK_STATE_SUCCEEDED);
  ASSERT_THAT(c_->DeleteJob(del), IsOk());
  EXPECT_THAT(c_->DeleteJob(del), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_FALSE(state_->GetJob("gone")->has_value());
  EXPECT_TRUE(state_->ListEvents("gone", 1)->empty());
  EXPECT_TRUE(state_->ListMetrics("gone", 0, 0)->empty());
  EXPECT_TRUE(state_->ListLogs("gone", 0, std::nullopt, 0, 100)->empty());
  Restart();
  v1::GetJobRequest get;
  get.set_job_id("gone");
  EXPECT_THAT(c_->GetJob(get).status(), StatusIs(absl::StatusCode::kNotFound, _));
}

// Each principal creates at most submission_burst jobs at once and then submissions_per_minute;
// the refusal names the limit and when to retry; another principal has its own allowance, and a
// resubmission of an existing job costs nothing.
TEST_F(CoordinatorTest, SubmissionsAreRateLimitedPerPrincipal) {
  submissions_per_minute_ = 6;
  submission_burst_ = 3;
  Restart();
  const Caller alice = Person("alice", kSubmitter), bob = Person("bob", kSubmitter);
  for (int i = 0; i < 3; ++i) {
    ASSERT_THAT(c_->SubmitJob(Submit(absl::StrCat("a", i), 1), alice).status(), IsOk());
  }
  EXPECT_THAT(c_->SubmitJob(Submit("a3", 1), alice).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("alice is over its submission rate (6 jobs per minute, bursts "
                                 "of 3): retry in 10 s")));
  EXPECT_THAT(c_->SubmitJob(Submit("a0", 1), alice).status(), IsOk()) << "idempotent, free";
  EXPECT_THAT(c_->SubmitJob(Submit("b0", 1), bob).status(), IsOk());
  clock_.Advance(absl::Seconds(10));
  EXPECT_THAT(c_->SubmitJob(Submit("a3", 1), alice).status(), IsOk());
  EXPECT_THAT(c_->SubmitJob(Submit("a4", 1), alice).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, _));
  v1::GetJobRequest get;
  get.set_job_id("a4");
  EXPECT_THAT(c_->GetJob(get).status(), StatusIs(absl::StatusCode::kNotFound, _));
}

// With certificates, a worker acts only as itself: registering, heartbeating, streaming or
// reporting under another worker's id is refused and changes nothing; the catalog takes shards
// only from the worker that holds the rank.
TEST_F(CoordinatorTest, AWorkerCertificateActsOnlyAsItsOwnWorker) {
  const Caller w1 = WorkerCaller("w1"), w2 = WorkerCaller("w2");
  EXPECT_THAT(c_->RegisterWorker(Worker("w1", 1), w2).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("w1")));
  EXPECT_TRUE(c_->ListWorkers().workers().empty());
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 1), w1).status(), IsOk());
  ASSERT_THAT(c_->RegisterWorker(Worker("w2", 1), w2).status(), IsOk());
  v1::HeartbeatRequest beat;
  beat.set_worker_id("w1");
  EXPECT_THAT(c_->Heartbeat(beat, w2).status(), StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_THAT(c_->Heartbeat(beat, w1).status(), IsOk());
  v1::StreamAssignmentsRequest stream;
  stream.set_worker_id("w1");
  EXPECT_THAT(c_->StreamAssignments(
                  stream, [](const v1::StreamAssignmentsResponse&) { return true; },
                  [] { return true; }, w2),
              StatusIs(absl::StatusCode::kPermissionDenied, _));

  ASSERT_THAT(c_->SubmitJob(Submit("job", 1)).status(), IsOk());
  const std::string holder = Get("job").assignments(0).worker_id();
  const Caller& holding = holder == "w1" ? w1 : w2;
  const Caller& other = holder == "w1" ? w2 : w1;
  v1::ReportStatusRequest report;
  report.set_worker_id(holder);
  report.set_job_id("job");
  report.set_attempt(1);
  report.set_rank(0);
  report.set_state(v1::RANK_STATE_SUCCEEDED);
  EXPECT_THAT(c_->ReportStatus(report, other), StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_EQ(Get("job").state(), v1::JOB_STATE_SCHEDULED);

  v1::RegisterShardRequest shard;
  shard.set_job_id("job");
  shard.set_tag("step_1");
  shard.set_step(1);
  shard.set_rank(0);
  shard.set_path("/data/ckpt/step_1/rank_00000.bin");
  EXPECT_THAT(c_->RegisterShard(shard, other),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("holds no rank")));
  v1::CommitCheckpointRequest commit;
  commit.set_job_id("job");
  commit.set_tag("step_1");
  commit.set_step(1);
  commit.set_manifest_path("/data/ckpt/step_1/manifest.json");
  EXPECT_THAT(c_->CommitCheckpoint(commit, other).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("holds no rank")));
  EXPECT_TRUE(state_->ListCheckpoints("job")->empty()) << "a refused shard is not recorded";
  EXPECT_THAT(c_->RegisterShard(shard, holding), IsOk());
  EXPECT_THAT(c_->CommitCheckpoint(commit, holding).status(), IsOk());
  v1::ListCheckpointsRequest list;
  list.set_job_id("job");
  EXPECT_THAT(c_->ListCheckpoints(list, holding).status(), IsOk());
  EXPECT_THAT(c_->ListCheckpoints(list, other).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_THAT(c_->ListCheckpoints(list, Person("mallory", kSubmitter)).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, _));
  EXPECT_THAT(c_->ListCheckpoints(list, Person("vera", kViewer)).status(), IsOk());
  EXPECT_THAT(c_->ReportStatus(report, holding), IsOk());
  EXPECT_EQ(Get("job").state(), v1::JOB_STATE_SUCCEEDED);
}

}  // namespace
}  // namespace dstrain::coordinator

namespace dstrain::coordinator {
namespace {

// No stream holds a server thread for longer than max_stream: a watch of a job that goes on ends
// with UNAVAILABLE naming the limit, a worker's assignment stream with OK (both reconnect).
TEST_F(CoordinatorTest, StreamsEndAtTheirMaximum) {
  max_stream_ = absl::Minutes(5);
  Restart();
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 1)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("long", 1)).status(), IsOk());
  absl::Status watched, streamed;
  std::thread watch([&] {
    v1::WatchJobRequest request;
    request.set_job_id("long");
    watched = c_->WatchJob(
        request, [](const v1::WatchJobResponse&) { return true; }, [] { return false; });
  });
  std::thread stream([&] {
    v1::StreamAssignmentsRequest request;
    request.set_worker_id("w1");
    streamed = c_->StreamAssignments(
        request, [](const v1::StreamAssignmentsResponse&) { return true; }, [] { return false; });
  });
  absl::SleepFor(absl::Milliseconds(100));  // both are waiting
  clock_.Advance(absl::Minutes(4));
  absl::SleepFor(absl::Milliseconds(100));
  clock_.Advance(absl::Minutes(1));
  watch.join();
  stream.join();
  EXPECT_THAT(watched, StatusIs(absl::StatusCode::kUnavailable,
                                HasSubstr("open for its maximum of 5m (kMaxStreamSeconds)")));
  EXPECT_THAT(streamed, IsOk()) << "an agent's stream just ends; it reconnects";
  EXPECT_EQ(Get("long").state(), v1::JOB_STATE_SCHEDULED);
}

// A spec over kMaxSpecBytes is RESOURCE_EXHAUSTED naming the limit, and nothing is stored.
TEST_F(CoordinatorTest, AnOversizedSpecIsRefusedNamingTheLimit) {
  v1::SubmitJobRequest big = Submit("big", 1);
  big.set_spec_json(big.spec_json() + std::string(limits::kMaxSpecBytes, ' '));
  EXPECT_THAT(c_->SubmitJob(big).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("is over the limit of 1048576 (kMaxSpecBytes)")));
  EXPECT_FALSE(state_->GetJob("big")->has_value());
}

}  // namespace
}  // namespace dstrain::coordinator

namespace dstrain::coordinator {
namespace {

// The SST files' bytes under `dir`.
uint64_t SstBytes(const std::string& dir) {
  uint64_t bytes = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".sst") bytes += e.file_size();
  }
  return bytes;
}

// dstrain delete on RocksDB: an ended job's 16 MiB of log leave the disk (the coordinator
// compacts after deleting), another job's records stay.
TEST(DeleteJobOnRocks, TheDeletedJobsSpaceComesBack) {
  const std::string dir = ::testing::TempDir() + "/delete_on_rocks";
  std::filesystem::remove_all(dir);
  auto db = RocksKvDb::Open(dir);
  ASSERT_THAT(db, IsOk());
  CoordinatorState state(db->get());
  FakeClock clock;
  CoordinatorOptions options;
  options.limits.data_root = "/data";
  options.log_lines_per_second = 1e9;
  options.log_burst_lines = 1e9;
  auto c = Coordinator::Create(&state, &clock, options);
  ASSERT_THAT(c, IsOk());
  ASSERT_THAT((*c)->RegisterWorker(Worker("w1", 2)).status(), IsOk());
  for (const char* id : {"big", "kept"}) {
    ASSERT_THAT((*c)->SubmitJob(Submit(id, 1)).status(), IsOk());
  }
  uint64_t x = 88172645463325252ull;  // incompressible text: xorshift over 64 characters
  auto line = [&x] {
    std::string text(4096, ' ');
    for (char& ch : text) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      ch = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"[x & 63];
    }
    return text;
  };
  for (int batch = 0; batch < 16; ++batch) {
    for (const char* id : {"big", "kept"}) {
      if (batch > 0 && std::string(id) == "kept") continue;  // one batch for the kept job
      v1::ReportStatusRequest r;
      r.set_worker_id("w1");
      r.set_job_id(id);
      r.set_attempt(1);
      r.set_rank(0);
      r.set_state(v1::RANK_STATE_RUNNING);
      for (int i = 0; i < 256; ++i) r.add_log_lines()->set_text(line());
      ASSERT_THAT((*c)->ReportStatus(r), IsOk());
    }
  }
  v1::ReportStatusRequest done;
  done.set_worker_id("w1");
  done.set_job_id("big");
  done.set_attempt(1);
  done.set_rank(0);
  done.set_state(v1::RANK_STATE_SUCCEEDED);
  ASSERT_THAT((*c)->ReportStatus(done), IsOk());
  ASSERT_THAT(state.Compact(), IsOk());  // everything in files
  const uint64_t before = SstBytes(dir);
  EXPECT_GT(before, uint64_t{16} << 20);

  v1::DeleteJobRequest del;
  del.set_job_id("big");
  ASSERT_THAT((*c)->DeleteJob(del), IsOk());
  const uint64_t after = SstBytes(dir);
  EXPECT_LT(after, uint64_t{2} << 20) << before << " bytes before, " << after << " after";
  EXPECT_GT(after, uint64_t{512} << 10) << "the kept job's 1 MiB of log is gone too";
  auto kept = state.ListLogs("kept", 0, std::nullopt, 0, 1000);
  ASSERT_THAT(kept, IsOk());
  EXPECT_EQ(kept->size(), 256u);
  (*c)->Shutdown();
}

}  // namespace
}  // namespace dstrain::coordinator

namespace dstrain::coordinator {
namespace {

// An attempt's rendezvous keys are for the workers that hold its ranks: another worker, a person,
// an ended attempt or something that is no attempt's prefix are refused.
TEST_F(CoordinatorTest, AStoreScopeBelongsToItsAttemptsWorkers) {
  ASSERT_THAT(c_->RegisterWorker(Worker("w1", 1)).status(), IsOk());
  ASSERT_THAT(c_->RegisterWorker(Worker("w2", 1)).status(), IsOk());
  ASSERT_THAT(c_->SubmitJob(Submit("job", 1)).status(), IsOk());
  const std::string holder = Get("job").assignments(0).worker_id();
  const std::string other = holder == "w1" ? "w2" : "w1";
  EXPECT_THAT(c_->MayUseStoreScope(WorkerCaller(holder), "jobs/job/attempt-1"), IsOk());
  EXPECT_THAT(c_->MayUseStoreScope(Caller::Trusted(), "jobs/job/attempt-1"), IsOk());
  for (const auto& [caller, scope] : std::vector<std::pair<Caller, std::string>>{
           {WorkerCaller(other), "jobs/job/attempt-1"},
           {Person("root", kAdmin), "jobs/job/attempt-1"},
           {WorkerCaller(holder), "jobs/job/attempt-2"},
           {WorkerCaller(holder), "jobs/nope/attempt-1"},
           {WorkerCaller(holder), "jobs/job/attempt-x"},
           {WorkerCaller(holder), "jobs/job"},
           {WorkerCaller(holder), "jobs/job/attempt-1/extra"}}) {
    EXPECT_THAT(c_->MayUseStoreScope(caller, scope),
                StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("holds no rank")))
        << scope;
  }
}

}  // namespace
}  // namespace dstrain::coordinator
