// The dstrain-worker binary end to end: printed addresses, /metrics, gRPC health, a rank run to
// completion, and SIGTERM stopping a running rank before exit 0.
#include <signal.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/agent/fake_coordinator.h"
#include "worker/agent/trainer_process.h"

namespace dstrain::agent {
namespace {

using ::dstrain::agent::testing::Eventually;
using ::dstrain::agent::testing::FakeCoordinator;
using ::dstrain::testing::IsOk;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(20);

std::string RunfilePath(const std::string& path) {
  return absl::StrCat(getenv("TEST_SRCDIR"), "/", getenv("TEST_WORKSPACE"), "/", path);
}

// The port after `prefix` in the daemon's output, or 0.
int PortAfter(const std::vector<std::string>& lines, const std::string& prefix) {
  for (const std::string& line : lines) {
    if (!absl::StartsWith(line, prefix)) continue;
    std::string rest = line.substr(prefix.size());
    rest = rest.substr(0, rest.find_first_of("/ "));
    int port = 0;
    if (absl::SimpleAtoi(rest, &port)) return port;
  }
  return 0;
}

// Reads the daemon's output until `done` or the deadline.
bool ReadUntil(TrainerProcess& p, std::vector<std::string>* lines,
               const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + kWait;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    p.ReadOutput(lines);
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

v1::Assignment StartAssignment(const std::string& job, int slot, const std::string& spec) {
  v1::Assignment a;
  a.set_kind(v1::ASSIGNMENT_KIND_START);
  a.set_job_id(job);
  a.set_attempt(1);
  a.set_rank(0);
  a.set_world_size(1);
  a.set_slot(slot);
  a.set_spec_json(spec);
  a.set_store_prefix("jobs/" + job + "/1/");
  return a;
}

TEST(DstrainWorker, ServesAndRunsRanksAndDrainsOnSigterm) {
  FakeCoordinator coordinator;
  ASSERT_THAT(coordinator.Start(), IsOk());
  const std::string work = std::string(getenv("TEST_TMPDIR")) + "/daemon-work";
  auto daemon = TrainerProcess::Spawn(
      {{RunfilePath("worker/agent/dstrain-worker"), "--coordinator", coordinator.address(),
        "--slots", "2", "--work-dir", work, "--insecure", "--data-root", work, "--trainer",
        RunfilePath("worker/agent/fake_trainer.sh"), "--worker-id", "daemon-test"},
       ""});
  ASSERT_THAT(daemon, IsOk());
  TrainerProcess& p = **daemon;
  std::vector<std::string> lines;
  const std::string metrics_prefix = "dstrain-worker: metrics on http://127.0.0.1:";
  const std::string health_prefix = "dstrain-worker: health on 127.0.0.1:";
  ASSERT_TRUE(ReadUntil(p, &lines, [&] {
    return PortAfter(lines, metrics_prefix) > 0 && PortAfter(lines, health_prefix) > 0;
  })) << ::testing::PrintToString(lines);
  const int metrics_port = PortAfter(lines, metrics_prefix);
  const int health_port = PortAfter(lines, health_prefix);
  for (const std::string& line : lines) {
    if (absl::StartsWith(line, metrics_prefix)) {
      EXPECT_TRUE(absl::EndsWith(line, "/metrics"));
    }
  }
  EXPECT_THAT(::testing::PrintToString(lines), HasSubstr("WARNING: --insecure"));

  ASSERT_TRUE(Eventually([&] { return !coordinator.registrations().empty(); }, kWait));
  const v1::RegisterWorkerRequest reg = coordinator.registrations()[0];
  EXPECT_EQ(reg.worker_id(), "daemon-test");
  EXPECT_EQ(reg.cpu_slots(), 2);
  EXPECT_EQ(reg.metrics_address(), absl::StrCat("127.0.0.1:", metrics_port));

  auto body = testing::HttpGet(metrics_port, "/metrics");
  ASSERT_THAT(body, IsOk());
  EXPECT_THAT(*body, HasSubstr("\ndstrain_worker_slots 2\n"));
  const std::string health = absl::StrCat("127.0.0.1:", health_port);
  EXPECT_TRUE(Eventually(
      [&] {
        auto s = testing::HealthCheck(health, "");
        return s.ok() && *s == 1;
      },
      kWait));

  coordinator.Push(StartAssignment("job-one", 0, R"({"mode": "ok", "code": 0})"));
  coordinator.Push(StartAssignment("job-two", 1, R"({"mode": "sleep"})"));
  auto final_of = [&](const std::string& job) -> v1::RankState {
    for (const auto& r : coordinator.reports()) {
      if (r.job_id() == job &&
          (r.state() == v1::RANK_STATE_SUCCEEDED || r.state() == v1::RANK_STATE_FAILED ||
           r.state() == v1::RANK_STATE_KILLED)) {
        return r.state();
      }
    }
    return v1::RANK_STATE_UNSPECIFIED;
  };
  auto running = [&](const std::string& job) {
    for (const auto& r : coordinator.reports()) {
      if (r.job_id() == job && r.state() == v1::RANK_STATE_RUNNING) return true;
    }
    return false;
  };
  ASSERT_TRUE(Eventually([&] { return final_of("job-one") != v1::RANK_STATE_UNSPECIFIED; }, kWait));
  EXPECT_EQ(final_of("job-one"), v1::RANK_STATE_SUCCEEDED);
  ASSERT_TRUE(Eventually([&] { return running("job-two"); }, kWait));

  // SIGTERM drains: the trainer is asked to checkpoint and leave (SIGUSR1), exits 201, and the
  // agent reports that and exits 0.
  ASSERT_EQ(kill(p.pid(), SIGTERM), 0);
  std::optional<ExitInfo> exit;
  ASSERT_TRUE(ReadUntil(p, &lines, [&] { return (exit = p.PollExit()).has_value(); }));
  EXPECT_EQ(exit->exit_code, 0) << ::testing::PrintToString(lines);
  EXPECT_EQ(exit->signal, 0);
  EXPECT_EQ(final_of("job-two"), v1::RANK_STATE_FAILED);
  bool drained = false;
  for (const auto& r : coordinator.reports()) {
    drained |= r.job_id() == "job-two" && r.exit_code() == 201;
  }
  EXPECT_TRUE(drained) << "the trainer did not leave through the drain";
  // The coordinator heard of the drain at once, and every heartbeat, the draining one too,
  // carried the registration's session token (a heartbeat without it is refused).
  bool told = false;
  for (const auto& h : coordinator.heartbeats()) {
    EXPECT_EQ(h.session_token(), "session-1");
    told |= h.draining();
  }
  EXPECT_TRUE(told);
}

TEST(DstrainWorker, ABadCommandLineExits2) {
  auto daemon = TrainerProcess::Spawn(
      {{RunfilePath("worker/agent/dstrain-worker"), "--slots", "2", "--work-dir", "/tmp/x"}, ""});
  ASSERT_THAT(daemon, IsOk());
  std::vector<std::string> lines;
  std::optional<ExitInfo> exit;
  ASSERT_TRUE(
      ReadUntil(**daemon, &lines, [&] { return (exit = (*daemon)->PollExit()).has_value(); }));
  (*daemon)->DrainOutput(&lines, 200);
  EXPECT_EQ(exit->exit_code, 2);
  EXPECT_THAT(::testing::PrintToString(lines), HasSubstr("--coordinator is required"));
}

// --gpus and --fake-gpus: a GPU-only worker with one GPU of a fake inventory of two registers
// that GPU, says so in its log and its /metrics, and runs a GPU rank on it; --slots 0 with no
// GPU is refused.
TEST(DstrainWorker, FakeGpusAreRegisteredAsGpuSlots) {
  FakeCoordinator coordinator;
  ASSERT_THAT(coordinator.Start(), IsOk());
  const std::string work = std::string(getenv("TEST_TMPDIR")) + "/gpu-work";
  auto daemon = TrainerProcess::Spawn(
      {{RunfilePath("worker/agent/dstrain-worker"), "--coordinator", coordinator.address(),
        "--slots", "0", "--gpus", "1", "--fake-gpus", "FakeGPU 80GB:85899345920,FakeGPU:1",
        "--work-dir", work, "--insecure", "--data-root", work, "--trainer",
        RunfilePath("worker/agent/fake_trainer.sh"), "--worker-id", "gpu-daemon"},
       ""});
  ASSERT_THAT(daemon, IsOk());
  TrainerProcess& p = **daemon;
  std::vector<std::string> lines;
  const std::string metrics_prefix = "dstrain-worker: metrics on http://127.0.0.1:";
  ASSERT_TRUE(ReadUntil(p, &lines, [&] { return PortAfter(lines, metrics_prefix) > 0; }));
  ASSERT_TRUE(Eventually([&] { return !coordinator.registrations().empty(); }, kWait));
  const v1::RegisterWorkerRequest reg = coordinator.registrations()[0];
  EXPECT_EQ(reg.cpu_slots(), 0);
  ASSERT_EQ(reg.gpus_size(), 1);
  EXPECT_EQ(reg.gpus(0).name(), "FakeGPU 80GB");
  EXPECT_EQ(reg.gpus(0).memory_bytes(), 85899345920);
  auto body = testing::HttpGet(PortAfter(lines, metrics_prefix), "/metrics");
  ASSERT_THAT(body, IsOk());
  EXPECT_THAT(*body, HasSubstr("\ndstrain_worker_gpus 1\n"));
  EXPECT_THAT(*body, HasSubstr("\ndstrain_worker_slots 0\n"));

  v1::Assignment start = StartAssignment("job-gpu", 0, R"({"mode": "ok", "code": 0})");
  start.set_slot_kind(v1::SLOT_KIND_GPU);
  coordinator.Push(start);
  ASSERT_TRUE(Eventually(
      [&] {
        for (const auto& r : coordinator.reports()) {
          for (const v1::LogLine& l : r.log_lines()) {
            if (l.text() == "rank 0 device cuda CUDA_VISIBLE_DEVICES=0") return true;
          }
        }
        return false;
      },
      kWait));
  ASSERT_EQ(kill(p.pid(), SIGINT), 0);
  std::optional<ExitInfo> exit;
  ASSERT_TRUE(ReadUntil(p, &lines, [&] { return (exit = p.PollExit()).has_value(); }));
  p.DrainOutput(&lines, 200);
  EXPECT_EQ(exit->exit_code, 0);
  EXPECT_THAT(::testing::PrintToString(lines),
              HasSubstr("1 GPU slot(s) of 2 GPU(s) from --fake-gpus (a test inventory): 0: "
                        "FakeGPU 80GB, 80.0 GiB"));

  auto none = TrainerProcess::Spawn(
      {{RunfilePath("worker/agent/dstrain-worker"), "--coordinator", coordinator.address(),
        "--slots", "0", "--work-dir", work, "--insecure", "--data-root", work, "--trainer",
        RunfilePath("worker/agent/fake_trainer.sh"), "--gpus", "none"},
       ""});
  ASSERT_THAT(none, IsOk());
  lines.clear();
  ASSERT_TRUE(ReadUntil(**none, &lines, [&] { return (exit = (*none)->PollExit()).has_value(); }));
  (*none)->DrainOutput(&lines, 200);
  EXPECT_EQ(exit->exit_code, 2);
  EXPECT_THAT(::testing::PrintToString(lines), HasSubstr("no slot at all"));
}

}  // namespace
}  // namespace dstrain::agent
