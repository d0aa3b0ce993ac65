#include "worker/agent/agent.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/agent/fake_coordinator.h"

namespace dstrain::agent {
namespace {

using ::dstrain::agent::testing::Eventually;
using ::dstrain::agent::testing::FakeCoordinator;
using ::dstrain::testing::IsOk;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kWait = absl::Seconds(20);

std::string FakeTrainer() {
  return absl::StrCat(getenv("TEST_SRCDIR"), "/", getenv("TEST_WORKSPACE"),
                      "/worker/agent/fake_trainer.sh");
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

bool IsFinal(v1::RankState s) {
  return s == v1::RANK_STATE_SUCCEEDED || s == v1::RANK_STATE_FAILED || s == v1::RANK_STATE_KILLED;
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_THAT(coordinator_.Start(), IsOk());
    static std::atomic<int> counter{0};
    work_dir_ = absl::StrCat(getenv("TEST_TMPDIR"), "/work-", counter++);
  }

  void TearDown() override {
    agent_.reset();
    coordinator_.Stop();
  }

  AgentOptions Options() {
    AgentOptions o;
    o.coordinator = coordinator_.address();
    o.worker_id = "w-test";
    o.hostname = "testhost";
    o.slots = 2;
    o.work_dir = work_dir_;
    o.trainer = FakeTrainer();
    o.metrics_address = "127.0.0.1:9999";
    o.cpus = 4;
    o.stop_grace = absl::Seconds(3);
    o.report_interval = absl::Milliseconds(50);
    o.rpc_timeout = absl::Seconds(2);
    o.backoff_initial = absl::Milliseconds(20);
    o.backoff_max = absl::Milliseconds(200);
    o.poll_interval = absl::Milliseconds(10);
    o.shutdown_flush_timeout = absl::Seconds(3);
    return o;
  }

  void StartAgent(AgentOptions o) {
    agent_ = std::make_unique<Agent>(o, &metrics_, [this](bool r) { ready_ = r; });
    ASSERT_THAT(agent_->Start(), IsOk());
    ASSERT_TRUE(Eventually([&] { return agent_->registered(); }, kWait));
  }
  void StartAgent() { StartAgent(Options()); }

  static v1::Assignment Start(const std::string& job, int attempt, int rank, int world, int slot,
                              const std::string& spec) {
    v1::Assignment a;
    a.set_kind(v1::ASSIGNMENT_KIND_START);
    a.set_job_id(job);
    a.set_attempt(attempt);
    a.set_rank(rank);
    a.set_world_size(world);
    a.set_slot(slot);
    a.set_spec_json(spec);
    a.set_store_prefix(absl::StrCat("jobs/", job, "/", attempt, "/"));
    a.set_reason("GangScheduled");
    return a;
  }
  static v1::Assignment Stop(const std::string& job, int attempt) {
    v1::Assignment a;
    a.set_kind(v1::ASSIGNMENT_KIND_STOP);
    a.set_job_id(job);
    a.set_attempt(attempt);
    a.set_reason("JobCancelled");
    return a;
  }

  std::string RankDir(const std::string& job, int attempt, int rank) const {
    return absl::StrCat(work_dir_, "/jobs/", job, "/attempt-", attempt, "/rank-", rank);
  }

  std::vector<v1::ReportStatusRequest> ReportsFor(const std::string& job, int attempt,
                                                  int rank) const {
    std::vector<v1::ReportStatusRequest> out;
    for (const v1::ReportStatusRequest& r : coordinator_.reports()) {
      if (r.job_id() == job && r.attempt() == attempt && r.rank() == rank) out.push_back(r);
    }
    return out;
  }

  std::optional<v1::ReportStatusRequest> Final(const std::string& job, int attempt,
                                               int rank) const {
    for (const v1::ReportStatusRequest& r : ReportsFor(job, attempt, rank)) {
      if (IsFinal(r.state())) return r;
    }
    return std::nullopt;
  }

  // Waits for the final report of a rank; fails the test without one.
  v1::ReportStatusRequest WaitFinal(const std::string& job, int attempt, int rank) {
    EXPECT_TRUE(Eventually([&] { return Final(job, attempt, rank).has_value(); }, kWait))
        << "no final report for " << job << "/" << attempt << "/" << rank;
    return Final(job, attempt, rank).value_or(v1::ReportStatusRequest());
  }

  // All output lines reported for a rank, in order.
  std::vector<std::string> OutputOf(const std::string& job, int attempt, int rank) const {
    std::vector<std::string> lines;
    for (const v1::ReportStatusRequest& r : ReportsFor(job, attempt, rank)) {
      for (const v1::LogLine& l : r.log_lines()) lines.push_back(l.text());
    }
    return lines;
  }

  bool Printed(const std::string& job, int attempt, int rank, const std::string& line) const {
    for (const std::string& l : OutputOf(job, attempt, rank)) {
      if (l == line) return true;
    }
    return false;
  }

  pid_t PidOf(const std::string& job, int attempt, int rank) {
    const std::string path = RankDir(job, attempt, rank) + "/pid";
    EXPECT_TRUE(Eventually([&] { return !ReadFile(path).empty(); }, kWait));
    return static_cast<pid_t>(std::atoi(ReadFile(path).c_str()));
  }

  FakeCoordinator coordinator_;
  AgentMetrics metrics_;
  std::atomic<bool> ready_{false};
  std::string work_dir_;
  std::unique_ptr<Agent> agent_;
};

TEST_F(AgentTest, RegistersAndHeartbeats) {
  StartAgent();
  const std::vector<v1::RegisterWorkerRequest> regs = coordinator_.registrations();
  ASSERT_EQ(regs.size(), 1u);
  EXPECT_EQ(regs[0].worker_id(), "w-test");
  EXPECT_EQ(regs[0].hostname(), "testhost");
  EXPECT_EQ(regs[0].cpu_slots(), 2);
  EXPECT_EQ(regs[0].metrics_address(), "127.0.0.1:9999");
  EXPECT_EQ(regs[0].version(), kAgentVersion);
  EXPECT_TRUE(regs[0].gpus().empty());
  // Every 100 ms, the fake coordinator's interval.
  ASSERT_TRUE(Eventually([&] { return coordinator_.heartbeats().size() >= 3; }, kWait));
  EXPECT_EQ(coordinator_.heartbeats()[0].worker_id(), "w-test");
  EXPECT_TRUE(coordinator_.heartbeats()[0].ranks().empty());
  EXPECT_TRUE(ready_);
  EXPECT_TRUE(Eventually([&] { return coordinator_.streams_opened() == 1; }, kWait));
  const std::string text = metrics_.Serialize();
  EXPECT_THAT(text, HasSubstr("\ndstrain_worker_slots 2\n"));
  EXPECT_THAT(text, HasSubstr("\ndstrain_worker_registered 1\n"));
}

TEST_F(AgentTest, KeepsRetryingWhileTheCoordinatorIsDown) {
  coordinator_.Stop();
  AgentOptions o = Options();
  agent_ = std::make_unique<Agent>(o, &metrics_, nullptr);
  ASSERT_THAT(agent_->Start(), IsOk());
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_FALSE(agent_->registered());
  EXPECT_THAT(metrics_.Serialize(),
              Not(HasSubstr("dstrain_worker_coordinator_errors_total{rpc=\"RegisterWorker\"} 0")));
  ASSERT_THAT(coordinator_.Start(), IsOk());
  EXPECT_TRUE(Eventually([&] { return agent_->registered(); }, kWait));
  EXPECT_EQ(coordinator_.registrations().size(), 1u);
}

TEST_F(AgentTest, StartRunsTheTrainerWithTheExactCommandLine) {
  AgentOptions o = Options();
  o.bind_address = "10.9.8.7";
  StartAgent(o);
  const std::string spec = R"({"mode": "sleep", "job": {"world_size": 2}})";
  coordinator_.Push(Start("job-a", 1, 0, 2, 1, spec));
  coordinator_.Push(Start("job-a", 1, 1, 2, 0, spec));
  const std::string dir0 = RankDir("job-a", 1, 0), dir1 = RankDir("job-a", 1, 1);
  ASSERT_TRUE(
      Eventually([&] { return Exists(dir0 + "/argv.txt") && Exists(dir1 + "/argv.txt"); }, kWait));
  ASSERT_TRUE(Eventually([&] { return Printed("job-a", 1, 1, "ready"); }, kWait));
  const std::string store = "grpc://" + coordinator_.address();
  const std::string catalog = coordinator_.address();
  // 4 CPUs over 2 slots: 2 threads each; --metrics-out for rank 0 only.
  const std::vector<std::string> want0 = {FakeTrainer(),
                                          "train",
                                          dir0 + "/job.json",
                                          "--rank",
                                          "0",
                                          "--world",
                                          "2",
                                          "--store",
                                          store,
                                          "--store-prefix",
                                          "jobs/job-a/1/",
                                          "--job-id",
                                          "job-a",
                                          "--attempt",
                                          "1",
                                          "--catalog",
                                          catalog,
                                          "--threads",
                                          "2",
                                          "--device",
                                          "cpu",
                                          "--bind-address",
                                          "10.9.8.7",
                                          "--metrics-out",
                                          dir0 + "/metrics.jsonl"};
  std::vector<std::string> want1 = want0;
  want1[2] = dir1 + "/job.json";
  want1[4] = "1";
  want1.resize(want1.size() - 2);
  EXPECT_THAT(absl::StrSplit(ReadFile(dir0 + "/argv.txt"), '\n', absl::SkipEmpty()),
              ElementsAreArray(want0));
  EXPECT_THAT(absl::StrSplit(ReadFile(dir1 + "/argv.txt"), '\n', absl::SkipEmpty()),
              ElementsAreArray(want1));
  EXPECT_EQ(ReadFile(dir0 + "/job.json"), spec);
  // CPU ranks see no GPU, whatever the agent's environment holds.
  EXPECT_EQ(ReadFile(dir0 + "/cuda_visible_devices.txt"), "\n");
  EXPECT_EQ(ReadFile(dir1 + "/cuda_visible_devices.txt"), "\n");

  // Heartbeats carry both ranks with their slots.
  ASSERT_TRUE(Eventually(
      [&] {
        const auto beats = coordinator_.heartbeats();
        return !beats.empty() && beats.back().ranks_size() == 2 &&
               beats.back().ranks(0).state() == v1::RANK_STATE_RUNNING &&
               beats.back().ranks(1).state() == v1::RANK_STATE_RUNNING;
      },
      kWait));
  const v1::HeartbeatRequest beat = coordinator_.heartbeats().back();
  EXPECT_EQ(beat.ranks(0).job_id(), "job-a");
  EXPECT_EQ(beat.ranks(0).attempt(), 1);
  EXPECT_EQ(beat.ranks(0).rank(), 0);
  EXPECT_EQ(beat.ranks(0).slot(), 1);
  EXPECT_EQ(beat.ranks(1).rank(), 1);
  EXPECT_EQ(beat.ranks(1).slot(), 0);
  EXPECT_THAT(metrics_.Serialize(), HasSubstr("dstrain_worker_ranks{state=\"running\"} 2\n"));
}

TEST_F(AgentTest, RelaysOutputAndMetricsThenReportsSucceeded) {
  StartAgent();
  coordinator_.Push(Start("job-ok", 1, 0, 1, 0, R"({"mode": "ok", "code": 0})"));
  const v1::ReportStatusRequest final = WaitFinal("job-ok", 1, 0);
  EXPECT_EQ(final.state(), v1::RANK_STATE_SUCCEEDED);
  EXPECT_EQ(final.exit_code(), 0);
  EXPECT_EQ(final.signal(), 0);
  EXPECT_EQ(final.worker_id(), "w-test");

  const std::vector<v1::ReportStatusRequest> reports = ReportsFor("job-ok", 1, 0);
  ASSERT_GE(reports.size(), 3u);
  EXPECT_EQ(reports.front().state(), v1::RANK_STATE_STARTING);
  EXPECT_TRUE(IsFinal(reports.back().state()));
  for (size_t i = 1; i + 1 < reports.size(); ++i) {
    EXPECT_EQ(reports[i].state(), v1::RANK_STATE_RUNNING) << i;
  }
  // Output, stdout and stderr merged, every line before the final report.
  const std::vector<std::string> output = OutputOf("job-ok", 1, 0);
  EXPECT_THAT(output, ::testing::Contains("hello from rank 0"));
  EXPECT_THAT(output, ::testing::Contains("warning from rank 0"));
  EXPECT_EQ(output.back(), "last words of rank 0");
  for (const v1::ReportStatusRequest& r : reports) {
    for (const v1::LogLine& l : r.log_lines()) {
      EXPECT_EQ(l.rank(), 0);
      EXPECT_EQ(l.sequence(), 0);
      EXPECT_GT(l.time().seconds(), 0);
    }
  }
  // Both metrics lines, in order.
  std::vector<v1::StepMetrics> steps;
  for (const v1::ReportStatusRequest& r : reports) {
    if (r.has_metrics()) steps.push_back(r.metrics());
  }
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].step(), 1);
  EXPECT_EQ(steps[0].loss(), 2.5);
  EXPECT_EQ(steps[0].lr(), 0.001);
  EXPECT_EQ(steps[0].grad_norm(), 1.25);
  EXPECT_EQ(steps[0].tokens_per_second(), 1000);
  EXPECT_EQ(steps[0].step_seconds(), 0.25);
  EXPECT_EQ(steps[0].loss_scale(), 1);
  EXPECT_EQ(steps[0].skipped_steps(), 0);
  EXPECT_EQ(steps[0].memory_bytes().at("params"), 100);
  EXPECT_EQ(steps[0].comm_bytes(), 4096);
  EXPECT_EQ(steps[0].attempt(), 1);
  EXPECT_FALSE(steps[0].has_val_loss());
  EXPECT_EQ(steps[1].step(), 2);
  EXPECT_EQ(steps[1].skipped_steps(), 1);
  EXPECT_TRUE(std::isnan(steps[1].grad_norm()));
  EXPECT_EQ(steps[1].val_loss(), 2.75);

  // Prometheus: totals stay, the job's gauges are gone with the trainer.
  const std::string text = metrics_.Serialize();
  EXPECT_THAT(text, HasSubstr("dstrain_worker_trainer_exits_total{result=\"succeeded\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_steps_total{job_id=\"job-ok\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_skipped_steps_total{job_id=\"job-ok\"} 1\n"));
  EXPECT_THAT(text,
              HasSubstr("dstrain_train_comm_bytes_total{job_id=\"job-ok\",rank=\"0\"} 5096\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_step_seconds_count{job_id=\"job-ok\"} 2\n"));
  EXPECT_THAT(text, Not(HasSubstr("dstrain_train_loss{")));
  // Delivered: the rank leaves the heartbeats.
  EXPECT_TRUE(Eventually([&] { return agent_->Ranks().empty(); }, kWait));
  // Every call spoke with the registration's session token.
  for (const v1::ReportStatusRequest& r : reports) EXPECT_EQ(r.session_token(), "session-1");
  for (const v1::HeartbeatRequest& h : coordinator_.heartbeats()) {
    EXPECT_EQ(h.session_token(), "session-1");
  }
  for (const std::string& t : coordinator_.stream_tokens()) EXPECT_EQ(t, "session-1");
}

TEST_F(AgentTest, NonZeroExitIsFailedWithTheExitCodeAndLastOutput) {
  StartAgent();
  coordinator_.Push(Start("job-f", 2, 1, 2, 0, R"({"mode": "ok", "code": 3})"));
  const v1::ReportStatusRequest final = WaitFinal("job-f", 2, 1);
  EXPECT_EQ(final.state(), v1::RANK_STATE_FAILED);
  EXPECT_EQ(final.exit_code(), 3);
  EXPECT_EQ(final.signal(), 0);
  EXPECT_THAT(final.message(), HasSubstr("exited with status 3"));
  EXPECT_THAT(final.message(), HasSubstr("hello from rank 1"));
  EXPECT_THAT(final.message(), HasSubstr("last words of rank 1"));
  EXPECT_FALSE(Exists(RankDir("job-f", 2, 1) + "/metrics.jsonl"));  // not rank 0
  EXPECT_THAT(metrics_.Serialize(),
              HasSubstr("dstrain_worker_trainer_exits_total{result=\"failed\"} 1\n"));
}

TEST_F(AgentTest, KilledBySignalNineIsFailedWithTheSignal) {
  StartAgent();
  coordinator_.Push(Start("job-k", 1, 0, 1, 1, R"({"mode": "sleep"})"));
  ASSERT_TRUE(Eventually([&] { return Printed("job-k", 1, 0, "ready"); }, kWait));
  ASSERT_EQ(kill(PidOf("job-k", 1, 0), SIGKILL), 0);
  const v1::ReportStatusRequest final = WaitFinal("job-k", 1, 0);
  EXPECT_EQ(final.state(), v1::RANK_STATE_FAILED);
  EXPECT_EQ(final.signal(), 9);
  EXPECT_EQ(final.exit_code(), 0);
  EXPECT_THAT(final.message(), HasSubstr("killed by signal 9"));
  // The agent lives on and takes the next rank in the freed slot.
  coordinator_.Push(Start("job-k", 2, 0, 1, 1, R"({"mode": "ok", "code": 0})"));
  EXPECT_EQ(WaitFinal("job-k", 2, 0).state(), v1::RANK_STATE_SUCCEEDED);
}

TEST_F(AgentTest, StopIsKilledWithinTheGrace) {
  StartAgent();
  coordinator_.Push(Start("job-s", 1, 0, 2, 0, R"({"mode": "sleep"})"));
  coordinator_.Push(Start("job-s", 1, 1, 2, 1, R"({"mode": "sleep"})"));
  ASSERT_TRUE(Eventually(
      [&] { return Printed("job-s", 1, 0, "ready") && Printed("job-s", 1, 1, "ready"); }, kWait));
  const absl::Time stop = absl::Now();
  coordinator_.Push(Stop("job-s", 1));
  for (int rank : {0, 1}) {
    const v1::ReportStatusRequest final = WaitFinal("job-s", 1, rank);
    EXPECT_EQ(final.state(), v1::RANK_STATE_KILLED);
    EXPECT_EQ(final.exit_code(), 143);
    EXPECT_THAT(final.message(), HasSubstr("STOP from the coordinator (JobCancelled)"));
    EXPECT_TRUE(Printed("job-s", 1, rank, absl::StrCat("rank ", rank, " got SIGTERM")));
  }
  EXPECT_LT(absl::Now() - stop, Options().stop_grace);
  EXPECT_THAT(metrics_.Serialize(),
              HasSubstr("dstrain_worker_trainer_exits_total{result=\"killed\"} 2\n"));
}

TEST_F(AgentTest, ATrainerIgnoringSigtermIsKilledAfterTheGrace) {
  AgentOptions o = Options();
  o.stop_grace = absl::Milliseconds(500);
  StartAgent(o);
  coordinator_.Push(Start("job-x", 1, 0, 1, 0, R"({"mode": "stubborn"})"));
  ASSERT_TRUE(Eventually([&] { return Printed("job-x", 1, 0, "ready"); }, kWait));
  const absl::Time stop = absl::Now();
  coordinator_.Push(Stop("job-x", 1));
  const v1::ReportStatusRequest final = WaitFinal("job-x", 1, 0);
  EXPECT_EQ(final.state(), v1::RANK_STATE_KILLED);
  EXPECT_EQ(final.signal(), 9);
  EXPECT_GE(absl::Now() - stop, o.stop_grace);
}

TEST_F(AgentTest, ADuplicateStartIsANoOp) {
  StartAgent();
  const v1::Assignment a = Start("job-d", 1, 0, 1, 0, R"({"mode": "waitfile", "code": 0})");
  coordinator_.Push(a);
  coordinator_.Push(a);
  ASSERT_TRUE(Eventually([&] { return Printed("job-d", 1, 0, "ready"); }, kWait));
  coordinator_.Push(a);  // while it runs
  absl::SleepFor(absl::Milliseconds(300));
  std::ofstream(RankDir("job-d", 1, 0) + "/go") << "go";
  EXPECT_EQ(WaitFinal("job-d", 1, 0).state(), v1::RANK_STATE_SUCCEEDED);
  coordinator_.Push(a);  // after it ended
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(ReadFile(work_dir_ + "/jobs/job-d/attempt-1/spawns.txt"), "spawned\n");
  int starting = 0;
  for (const auto& r : ReportsFor("job-d", 1, 0)) starting += r.state() == v1::RANK_STATE_STARTING;
  EXPECT_EQ(starting, 1);
}

TEST_F(AgentTest, RefusesASlotOutOfRangeOrBusy) {
  StartAgent();
  coordinator_.Push(Start("job-r", 1, 0, 3, 2, R"({"mode": "sleep"})"));
  v1::ReportStatusRequest out_of_range = WaitFinal("job-r", 1, 0);
  EXPECT_EQ(out_of_range.state(), v1::RANK_STATE_FAILED);
  EXPECT_THAT(out_of_range.message(), HasSubstr("slot 2 is outside this worker's slots [0, 2)"));

  coordinator_.Push(Start("job-r", 1, 1, 3, 0, R"({"mode": "sleep"})"));
  ASSERT_TRUE(Eventually([&] { return Printed("job-r", 1, 1, "ready"); }, kWait));
  coordinator_.Push(Start("job-r", 1, 2, 3, 0, R"({"mode": "sleep"})"));
  v1::ReportStatusRequest busy = WaitFinal("job-r", 1, 2);
  EXPECT_EQ(busy.state(), v1::RANK_STATE_FAILED);
  EXPECT_THAT(busy.message(), HasSubstr("slot 0 is busy with job job-r attempt 1 rank 1"));
  EXPECT_FALSE(Exists(RankDir("job-r", 1, 0)));
  EXPECT_FALSE(Exists(RankDir("job-r", 1, 2)));
  // Only the refused ranks have final reports; the running one is untouched.
  EXPECT_FALSE(Final("job-r", 1, 1).has_value());
}

// A worker with two (fake) GPUs and a CPU slot: it registers the GPUs beside the CPU slot, and
// each rank gets its own GPU (CUDA_VISIBLE_DEVICES under the agent's own list) and
// --device cuda, or no GPU and --device cpu; the rank-0 trainer's device memory is exported
// while it runs.
TEST_F(AgentTest, AGpuWorkerRegistersItsGpusAndGivesEachRankItsGpu) {
  AgentOptions o = Options();
  o.slots = 1;
  o.cpus = 6;
  o.gpus = ToGpuSlots(ParseFakeGpus("FakeGPU:1073741824,FakeGPU:1073741824").value(), "5,7");
  StartAgent(o);
  const std::vector<v1::RegisterWorkerRequest> regs = coordinator_.registrations();
  ASSERT_EQ(regs.size(), 1u);
  EXPECT_EQ(regs[0].cpu_slots(), 1);
  ASSERT_EQ(regs[0].gpus_size(), 2);
  EXPECT_EQ(regs[0].gpus(1).index(), 1);
  EXPECT_EQ(regs[0].gpus(1).name(), "FakeGPU");
  EXPECT_EQ(regs[0].gpus(1).memory_bytes(), 1073741824);
  std::string text = metrics_.Serialize();
  EXPECT_THAT(text, HasSubstr("\ndstrain_worker_gpus 2\n"));
  EXPECT_THAT(text, HasSubstr("\ndstrain_worker_slots 1\n"));

  const std::string spec = R"({"mode": "steps"})";
  v1::Assignment gpu0 = Start("job-g", 1, 0, 2, 1, spec);
  gpu0.set_slot_kind(v1::SLOT_KIND_GPU);
  v1::Assignment gpu1 = Start("job-g", 1, 1, 2, 0, spec);
  gpu1.set_slot_kind(v1::SLOT_KIND_GPU);
  v1::Assignment cpu = Start("job-c", 1, 0, 1, 2, spec);
  cpu.set_slot_kind(v1::SLOT_KIND_CPU);
  for (const v1::Assignment& a : {gpu0, gpu1, cpu}) coordinator_.Push(a);
  for (const auto& [job, rank] :
       {std::pair<std::string, int>{"job-g", 0}, {"job-g", 1}, {"job-c", 0}}) {
    ASSERT_TRUE(Eventually([&] { return Printed(job, 1, rank, "ready"); }, kWait)) << job << rank;
  }
  const std::string g0 = RankDir("job-g", 1, 0), g1 = RankDir("job-g", 1, 1),
                    c0 = RankDir("job-c", 1, 0);
  EXPECT_EQ(ReadFile(g0 + "/cuda_visible_devices.txt"), "7\n") << "slot 1 is GPU 1";
  EXPECT_EQ(ReadFile(g1 + "/cuda_visible_devices.txt"), "5\n");
  EXPECT_EQ(ReadFile(c0 + "/cuda_visible_devices.txt"), "\n");
  EXPECT_TRUE(Printed("job-g", 1, 0, "rank 0 device cuda CUDA_VISIBLE_DEVICES=7"));
  EXPECT_TRUE(Printed("job-c", 1, 0, "rank 0 device cpu CUDA_VISIBLE_DEVICES="));
  const auto argv = [&](const std::string& dir) {
    std::vector<std::string> args = absl::StrSplit(ReadFile(dir + "/argv.txt"), '\n');
    return args;
  };
  // 6 CPUs over 3 slots: 2 threads each, GPU ranks included.
  EXPECT_THAT(argv(g0), ::testing::IsSupersetOf({"--device", "cuda", "--threads", "2"}));
  EXPECT_THAT(argv(c0), ::testing::Contains("cpu"));
  EXPECT_THAT(argv(c0), Not(::testing::Contains("cuda")));

  // The GPU rank 0 reports its device memory; the CPU rank 0's lines have none.
  ASSERT_TRUE(Eventually(
      [&] {
        return absl::StrContains(
            metrics_.Serialize(),
            "dstrain_worker_device_memory_bytes{job_id=\"job-g\",rank=\"0\",state=\"peak\"} "
            "2147483648\n");
      },
      kWait));
  text = metrics_.Serialize();
  EXPECT_THAT(
      text,
      HasSubstr("dstrain_worker_device_memory_bytes{job_id=\"job-g\",rank=\"0\",state=\"in_use\"} "
                "1073741824\n"));
  EXPECT_THAT(text, Not(HasSubstr("dstrain_worker_device_memory_bytes{job_id=\"job-c\"")));

  for (const std::string& dir : {g0, g1, c0}) std::ofstream(dir + "/go") << "go";
  EXPECT_EQ(WaitFinal("job-g", 1, 0).state(), v1::RANK_STATE_SUCCEEDED);
  EXPECT_EQ(WaitFinal("job-g", 1, 1).state(), v1::RANK_STATE_SUCCEEDED);
  EXPECT_EQ(WaitFinal("job-c", 1, 0).state(), v1::RANK_STATE_SUCCEEDED);
  EXPECT_THAT(metrics_.Serialize(), Not(HasSubstr("dstrain_worker_device_memory_bytes{")));
}

TEST_F(AgentTest, RefusesAStartWhoseKindIsNotTheSlots) {
  AgentOptions o = Options();
  o.slots = 1;
  o.gpus = ToGpuSlots(ParseFakeGpus("FakeGPU:1000").value(), nullptr);
  StartAgent(o);
  v1::Assignment on_gpu_as_cpu = Start("job-k", 1, 0, 2, 0, R"({"mode": "sleep"})");
  on_gpu_as_cpu.set_slot_kind(v1::SLOT_KIND_CPU);
  v1::Assignment on_cpu_as_gpu = Start("job-k", 1, 1, 2, 1, R"({"mode": "sleep"})");
  on_cpu_as_gpu.set_slot_kind(v1::SLOT_KIND_GPU);
  coordinator_.Push(on_gpu_as_cpu);
  coordinator_.Push(on_cpu_as_gpu);
  v1::ReportStatusRequest first = WaitFinal("job-k", 1, 0);
  EXPECT_EQ(first.state(), v1::RANK_STATE_FAILED);
  EXPECT_THAT(first.message(), HasSubstr("slot 0 is a GPU slot of this worker (1 GPU slot(s) "
                                         "first, then 1 CPU slot(s)), but the assignment is for "
                                         "a CPU slot"));
  v1::ReportStatusRequest second = WaitFinal("job-k", 1, 1);
  EXPECT_EQ(second.state(), v1::RANK_STATE_FAILED);
  EXPECT_THAT(second.message(), HasSubstr("slot 1 is a CPU slot"));
  EXPECT_FALSE(Exists(RankDir("job-k", 1, 0)));
  // Without a kind (an older coordinator), the slot's own kind counts.
  coordinator_.Push(Start("job-u", 1, 0, 1, 0, R"({"mode": "ok"})"));
  EXPECT_EQ(WaitFinal("job-u", 1, 0).state(), v1::RANK_STATE_SUCCEEDED);
  EXPECT_TRUE(Printed("job-u", 1, 0, "rank 0 device cuda CUDA_VISIBLE_DEVICES=0"));
}

TEST_F(AgentTest, AGpuOnlyWorkerAndOptionsChecks) {
  AgentOptions o = Options();
  o.slots = 0;
  o.gpus = ToGpuSlots(ParseFakeGpus("FakeGPU:1000").value(), nullptr);
  StartAgent(o);
  EXPECT_EQ(coordinator_.registrations()[0].cpu_slots(), 0);
  EXPECT_EQ(coordinator_.registrations()[0].gpus_size(), 1);
  agent_.reset();

  o.gpus.clear();
  Agent nothing(o, nullptr, nullptr);
  EXPECT_THAT(nothing.Start(), ::dstrain::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                                            HasSubstr("no slots")));
  o.gpus = ToGpuSlots(ParseFakeGpus("A:1,B:2").value(), nullptr);
  o.gpus[1].info.set_index(0);
  Agent misnumbered(o, nullptr, nullptr);
  EXPECT_THAT(misnumbered.Start(), ::dstrain::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                                                HasSubstr("gpus[1] has index 0")));
}

TEST_F(AgentTest, AStartForASlotBeingStoppedWaitsForIt) {
  AgentOptions o = Options();
  o.stop_grace = absl::Milliseconds(500);
  StartAgent(o);
  coordinator_.Push(Start("job-old", 1, 0, 1, 0, R"({"mode": "stubborn"})"));
  ASSERT_TRUE(Eventually([&] { return Printed("job-old", 1, 0, "ready"); }, kWait));
  // What the coordinator does when a job ends and the next one is placed on the same slot.
  coordinator_.Push(Stop("job-old", 1));
  coordinator_.Push(Start("job-new", 1, 0, 1, 0, R"({"mode": "ok", "code": 0})"));
  EXPECT_EQ(WaitFinal("job-old", 1, 0).state(), v1::RANK_STATE_KILLED);
  EXPECT_EQ(WaitFinal("job-new", 1, 0).state(), v1::RANK_STATE_SUCCEEDED);
  // The new rank was spawned only after the old one was gone.
  const auto reports = coordinator_.reports();
  size_t old_final = reports.size(), new_start = reports.size();
  for (size_t i = 0; i < reports.size(); ++i) {
    if (reports[i].job_id() == "job-old" && IsFinal(reports[i].state())) old_final = i;
    if (reports[i].job_id() == "job-new" && reports[i].state() == v1::RANK_STATE_STARTING) {
      new_start = std::min(new_start, i);
    }
  }
  EXPECT_LT(old_final, new_start);
}

TEST_F(AgentTest, AStopCancelsAStartWaitingForItsSlot) {
  AgentOptions o = Options();
  o.stop_grace = absl::Milliseconds(500);
  StartAgent(o);
  coordinator_.Push(Start("job-old", 1, 0, 1, 1, R"({"mode": "stubborn"})"));
  ASSERT_TRUE(Eventually([&] { return Printed("job-old", 1, 0, "ready"); }, kWait));
  coordinator_.Push(Stop("job-old", 1));
  coordinator_.Push(Start("job-new", 1, 0, 1, 1, R"({"mode": "ok", "code": 0})"));
  coordinator_.Push(Stop("job-new", 1));
  const v1::ReportStatusRequest cancelled = WaitFinal("job-new", 1, 0);
  EXPECT_EQ(cancelled.state(), v1::RANK_STATE_KILLED);
  EXPECT_THAT(cancelled.message(), HasSubstr("stopped before it started"));
  EXPECT_EQ(WaitFinal("job-old", 1, 0).state(), v1::RANK_STATE_KILLED);
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_FALSE(Exists(RankDir("job-new", 1, 0)));
}

TEST_F(AgentTest, OutputIsDroppedBeforeStateChangesWhenTheQueueIsFull) {
  AgentOptions o = Options();
  o.max_queued_bytes = 20000;  // about two batches of 200 lines
  StartAgent(o);
  coordinator_.Push(Start("job-c", 1, 0, 1, 0, R"({"mode": "chatty", "code": 0})"));
  ASSERT_TRUE(Eventually([&] { return Printed("job-c", 1, 0, "ready"); }, kWait));
  const int port = coordinator_.port();
  coordinator_.Stop();
  std::ofstream(RankDir("job-c", 1, 0) + "/go") << "go";
  ASSERT_TRUE(Eventually(
      [&] {
        const auto ranks = agent_->Ranks();
        return ranks.size() == 1 && ranks[0].state() == v1::RANK_STATE_SUCCEEDED;
      },
      kWait));
  ASSERT_THAT(coordinator_.Start(port), IsOk());
  EXPECT_EQ(WaitFinal("job-c", 1, 0).state(), v1::RANK_STATE_SUCCEEDED);
  // The oldest output went; the newest (most telling) stayed, and so did every state change.
  const std::vector<std::string> relayed = OutputOf("job-c", 1, 0);
  EXPECT_GT(relayed.size(), 1u);
  EXPECT_LT(relayed.size(), 1001u);
  EXPECT_EQ(relayed.back(), "line 999 of some chatty output");
  EXPECT_EQ(ReportsFor("job-c", 1, 0).front().state(), v1::RANK_STATE_STARTING);
  EXPECT_THAT(metrics_.Serialize(), Not(HasSubstr("dstrain_worker_dropped_log_lines_total 0\n")));
}

TEST_F(AgentTest, RegistersAgainAfterHeartbeatNotFound) {
  StartAgent();
  coordinator_.Push(Start("job-n", 1, 0, 1, 0, R"({"mode": "sleep"})"));
  ASSERT_TRUE(Eventually([&] { return Printed("job-n", 1, 0, "ready"); }, kWait));
  coordinator_.FailHeartbeats(grpc::StatusCode::NOT_FOUND, 1);
  ASSERT_TRUE(Eventually([&] { return coordinator_.registrations().size() == 2; }, kWait));
  // Its ranks were given up: the trainer was stopped.
  const v1::ReportStatusRequest final = WaitFinal("job-n", 1, 0);
  EXPECT_EQ(final.state(), v1::RANK_STATE_KILLED);
  EXPECT_THAT(final.message(), HasSubstr("no longer knows this worker"));
  // A new stream follows the new registration, and the slot is free again.
  EXPECT_TRUE(Eventually([&] { return coordinator_.streams_opened() >= 2; }, kWait));
  coordinator_.Push(Start("job-n", 2, 0, 1, 0, R"({"mode": "ok", "code": 0})"));
  EXPECT_EQ(WaitFinal("job-n", 2, 0).state(), v1::RANK_STATE_SUCCEEDED);
  EXPECT_TRUE(agent_->registered());
}

// PERMISSION_DENIED on a heartbeat: another registration of this worker id replaced ours. The
// agent gives its ranks up, registers again and speaks with the new session token.
TEST_F(AgentTest, RegistersAgainWhenItsSessionWasReplaced) {
  StartAgent();
  ASSERT_TRUE(Eventually([&] { return !coordinator_.heartbeats().empty(); }, kWait));
  coordinator_.FailHeartbeats(grpc::StatusCode::PERMISSION_DENIED, 1);
  ASSERT_TRUE(Eventually([&] { return coordinator_.registrations().size() == 2; }, kWait));
  ASSERT_TRUE(Eventually(
      [&] { return coordinator_.heartbeats().back().session_token() == "session-2"; }, kWait));
  EXPECT_TRUE(Eventually(
      [&] {
        const auto tokens = coordinator_.stream_tokens();
        return !tokens.empty() && tokens.back() == "session-2";
      },
      kWait));
}

TEST_F(AgentTest, TheExitReportSurvivesACoordinatorOutage) {
  StartAgent();
  coordinator_.Push(Start("job-o", 1, 0, 1, 0, R"({"mode": "waitfile", "code": 3})"));
  ASSERT_TRUE(Eventually([&] { return Printed("job-o", 1, 0, "ready"); }, kWait));
  const int port = coordinator_.port();
  coordinator_.Stop();
  // The trainer exits while nobody listens.
  std::ofstream(RankDir("job-o", 1, 0) + "/go") << "go";
  ASSERT_TRUE(Eventually(
      [&] {
        const auto ranks = agent_->Ranks();
        return ranks.size() == 1 && ranks[0].state() == v1::RANK_STATE_FAILED;
      },
      kWait));
  absl::SleepFor(absl::Milliseconds(500));  // a few failed retries
  EXPECT_FALSE(Final("job-o", 1, 0).has_value());
  EXPECT_FALSE(ready_);
  ASSERT_THAT(coordinator_.Start(port), IsOk());
  const v1::ReportStatusRequest final = WaitFinal("job-o", 1, 0);
  EXPECT_EQ(final.state(), v1::RANK_STATE_FAILED);
  EXPECT_EQ(final.exit_code(), 3);
  EXPECT_TRUE(Printed("job-o", 1, 0, "exiting with 3"));
  // Heartbeats resume under the same registration.
  EXPECT_EQ(coordinator_.registrations().size(), 1u);
  EXPECT_TRUE(Eventually([&] { return ready_.load(); }, kWait));
  EXPECT_TRUE(Eventually([&] { return agent_->Ranks().empty(); }, kWait));
  EXPECT_THAT(metrics_.Serialize(),
              Not(HasSubstr("dstrain_worker_coordinator_errors_total{rpc=\"ReportStatus\"} 0\n")));
}

TEST_F(AgentTest, FailedReportsAreRetriedInOrder) {
  StartAgent();
  coordinator_.FailReports(grpc::StatusCode::UNAVAILABLE, 3);
  coordinator_.Push(Start("job-t", 1, 0, 1, 0, R"({"mode": "ok", "code": 0})"));
  EXPECT_EQ(WaitFinal("job-t", 1, 0).state(), v1::RANK_STATE_SUCCEEDED);
  const auto reports = ReportsFor("job-t", 1, 0);
  EXPECT_EQ(reports.front().state(), v1::RANK_STATE_STARTING);
  EXPECT_EQ(reports.back().state(), v1::RANK_STATE_SUCCEEDED);
  EXPECT_THAT(metrics_.Serialize(),
              HasSubstr("dstrain_worker_coordinator_errors_total{rpc=\"ReportStatus\"} 3\n"));
}

TEST_F(AgentTest, ShutdownStopsTheTrainersAndReportsThem) {
  StartAgent();
  coordinator_.Push(Start("job-q", 1, 0, 1, 0, R"({"mode": "sleep"})"));
  ASSERT_TRUE(Eventually([&] { return Printed("job-q", 1, 0, "ready"); }, kWait));
  const pid_t pid = PidOf("job-q", 1, 0);
  const absl::Time start = absl::Now();
  agent_->Shutdown();
  EXPECT_LT(absl::Now() - start, Options().stop_grace);
  // Delivered before Shutdown returned.
  const std::optional<v1::ReportStatusRequest> final = Final("job-q", 1, 0);
  ASSERT_TRUE(final.has_value());
  EXPECT_EQ(final->state(), v1::RANK_STATE_KILLED);
  EXPECT_THAT(final->message(), HasSubstr("shutting down"));
  EXPECT_NE(kill(pid, 0), 0);
  EXPECT_FALSE(ready_);
}

}  // namespace
}  // namespace dstrain::agent
