#include "worker/agent/agent_metrics.h"

#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/clock/clock.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/agent/fake_coordinator.h"

namespace dstrain::agent {
namespace {

using ::dstrain::testing::IsOk;
using ::testing::HasSubstr;
using ::testing::Not;

v1::StepMetrics Step(int64_t step, double loss) {
  v1::StepMetrics m;
  m.set_step(step);
  m.set_loss(loss);
  m.set_lr(3e-4);
  m.set_grad_norm(0.5);
  m.set_loss_scale(1024);
  m.set_tokens_per_second(5000);
  m.set_step_seconds(0.2);
  m.set_comm_bytes(1000);
  (*m.mutable_memory_bytes())["params"] = 4096;
  (*m.mutable_memory_bytes())["grads"] = 2048;
  return m;
}

// The checks `promtool check metrics` makes (and a few it misses): HELP and TYPE once per family
// and before its samples, counters named *_total, no abbreviated units, families contiguous.
void ExpectLintClean(const std::string& text) {
  ASSERT_TRUE(absl::EndsWith(text, "\n"));
  std::map<std::string, std::string> types;
  std::set<std::string> helps, finished;
  std::string current;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&line, "# HELP ")) {
      const std::string name(line.substr(0, line.find(' ')));
      EXPECT_TRUE(helps.insert(name).second) << "second HELP for " << name;
      EXPECT_GT(line.size(), name.size() + 1) << "empty HELP for " << name;
      continue;
    }
    if (absl::ConsumePrefix(&line, "# TYPE ")) {
      const std::vector<std::string> parts = absl::StrSplit(line, ' ');
      ASSERT_EQ(parts.size(), 2u);
      EXPECT_TRUE(types.emplace(parts[0], parts[1]).second) << "second TYPE for " << parts[0];
      EXPECT_TRUE(absl::StartsWith(parts[0], "dstrain_")) << parts[0];
      EXPECT_FALSE(absl::StrContains(parts[0], "_ms")) << parts[0];
      if (parts[1] == "counter") {
        EXPECT_TRUE(absl::EndsWith(parts[0], "_total")) << parts[0];
      }
      if (!current.empty() && current != parts[0]) finished.insert(current);
      EXPECT_EQ(finished.count(parts[0]), 0u) << parts[0] << " is not contiguous";
      current = parts[0];
      continue;
    }
    std::string name(line.substr(0, line.find_first_of("{ ")));
    std::string family = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      if (types.count(family) == 0 && absl::EndsWith(family, suffix)) {
        family = family.substr(0, family.size() - strlen(suffix));
      }
    }
    EXPECT_EQ(family, current) << "sample " << name << " outside its family";
    EXPECT_EQ(helps.count(family), 1u) << "no HELP for " << family;
  }
}

TEST(AgentMetrics, ExportsTheWorkerFamiliesFromTheStart) {
  FakeClock clock;
  AgentMetrics metrics(&clock);
  metrics.SetSlots(4);
  metrics.SetGpus(2);
  metrics.SetRanks(1, 2);
  metrics.TrainerExited(v1::RANK_STATE_FAILED);
  metrics.CoordinatorError("Heartbeat");
  clock.Advance(absl::Seconds(7));
  const std::string text = metrics.Serialize();
  EXPECT_THAT(text, HasSubstr("\ndstrain_worker_slots 4\n"));
  EXPECT_THAT(text, HasSubstr("\ndstrain_worker_gpus 2\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_worker_ranks{state=\"starting\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_worker_ranks{state=\"running\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_worker_trainer_exits_total{result=\"failed\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_worker_trainer_exits_total{result=\"succeeded\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_worker_coordinator_errors_total{rpc=\"Heartbeat\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_worker_coordinator_errors_total{rpc=\"ReportStatus\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_worker_heartbeat_age_seconds 7\n"));
  metrics.HeartbeatSucceeded();
  clock.Advance(absl::Milliseconds(1500));
  EXPECT_THAT(metrics.Serialize(), HasSubstr("dstrain_worker_heartbeat_age_seconds 1.5\n"));
  ExpectLintClean(metrics.Serialize());
}

TEST(AgentMetrics, TrainingMetricsByJobAndRank) {
  AgentMetrics metrics;
  const TrainerLabels t{"gpt-a", 0};
  metrics.ObserveStep(t, Step(1, 2.5), 0);
  v1::StepMetrics second = Step(2, 2.25);
  second.set_step_seconds(3);
  second.set_comm_wait_seconds(0.5);
  second.set_checkpoint_seconds(2);
  second.set_checkpoint_bytes(1 << 20);
  second.set_val_loss(2.75);
  metrics.ObserveStep(t, second, 1);
  const std::string text = metrics.Serialize();
  EXPECT_THAT(text, HasSubstr("dstrain_train_loss{job_id=\"gpt-a\"} 2.25\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_val_loss{job_id=\"gpt-a\"} 2.75\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_step{job_id=\"gpt-a\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_grad_norm{job_id=\"gpt-a\"} 0.5\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_loss_scale{job_id=\"gpt-a\"} 1024\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_tokens_per_second{job_id=\"gpt-a\"} 5000\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_skipped_steps_total{job_id=\"gpt-a\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_steps_total{job_id=\"gpt-a\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("dstrain_train_comm_bytes_total{job_id=\"gpt-a\",rank=\"0\"} 2000\n"));
  EXPECT_THAT(
      text, HasSubstr("dstrain_train_comm_wait_seconds_total{job_id=\"gpt-a\",rank=\"0\"} 0.5\n"));
  EXPECT_THAT(text,
              HasSubstr("dstrain_checkpoint_save_duration_seconds_count{job_id=\"gpt-a\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_checkpoint_save_duration_seconds_bucket{job_id=\"gpt-a\","
                              "le=\"3\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_checkpoint_bytes_total{job_id=\"gpt-a\"} 1048576\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_checkpoint_save_failures_total{job_id=\"gpt-a\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_memory_bytes{category=\"params\",job_id=\"gpt-a\","
                              "rank=\"0\"} 4096\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_step_seconds_count{job_id=\"gpt-a\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("dstrain_train_step_seconds_bucket{job_id=\"gpt-a\",le=\"0.25\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_step_seconds_bucket{job_id=\"gpt-a\",le=\"5\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("dstrain_train_step_seconds_bucket{job_id=\"gpt-a\",le=\"+Inf\"} 2\n"));
  EXPECT_THAT(text, Not(HasSubstr("slot=")));
  ExpectLintClean(text);

  // A failed save is counted from the line that says so.
  metrics.ObserveStep(t, Step(3, 2.0), 0, /*checkpoint_failed=*/true);
  EXPECT_THAT(metrics.Serialize(),
              HasSubstr("dstrain_checkpoint_save_failures_total{job_id=\"gpt-a\"} 1\n"));

  // The job ended: its gauges go, the totals stay.
  metrics.TrainerEnded(t);
  const std::string after = metrics.Serialize();
  EXPECT_THAT(after, Not(HasSubstr("dstrain_train_loss{")));
  EXPECT_THAT(after, Not(HasSubstr("dstrain_train_val_loss{")));
  EXPECT_THAT(after, Not(HasSubstr("dstrain_train_memory_bytes{")));
  EXPECT_THAT(after, HasSubstr("dstrain_train_steps_total{job_id=\"gpt-a\"} 3\n"));
  ExpectLintClean(after);
  // The next attempt of the job brings the gauges back and keeps counting.
  metrics.ObserveStep(t, Step(1, 4.0), 0);
  EXPECT_THAT(metrics.Serialize(), HasSubstr("dstrain_train_loss{job_id=\"gpt-a\"} 4\n"));
  EXPECT_THAT(metrics.Serialize(), HasSubstr("dstrain_train_steps_total{job_id=\"gpt-a\"} 4\n"));
}

TEST(AgentMetrics, TwoJobsOnOneWorkerAreTwoSeries) {
  AgentMetrics metrics;
  metrics.ObserveStep({"a", 0}, Step(1, 2.5), 0);
  metrics.ObserveStep({"b", 0}, Step(1, 3.5), 0);
  const std::string text = metrics.Serialize();
  EXPECT_THAT(text, HasSubstr("dstrain_train_loss{job_id=\"a\"} 2.5\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_loss{job_id=\"b\"} 3.5\n"));
  metrics.TrainerEnded({"a", 0});
  EXPECT_THAT(metrics.Serialize(), Not(HasSubstr("dstrain_train_loss{job_id=\"a\"}")));
  EXPECT_THAT(metrics.Serialize(), HasSubstr("dstrain_train_loss{job_id=\"b\"} 3.5\n"));
}

TEST(AgentMetrics, CountersOfEndedJobsAreBounded) {
  AgentMetrics metrics;
  const int jobs = AgentMetrics::kEndedTrainersKept + 3;
  for (int j = 0; j < jobs; ++j) {
    const TrainerLabels t{"job-" + std::to_string(j), 0};
    metrics.ObserveStep(t, Step(1, 2.5), 0);
    metrics.TrainerEnded(t);
  }
  const std::string text = metrics.Serialize();
  for (int j = 0; j < jobs; ++j) {
    const std::string series =
        "dstrain_train_steps_total{job_id=\"job-" + std::to_string(j) + "\"}";
    // The oldest three are gone, the last kEndedTrainersKept remain.
    EXPECT_EQ(absl::StrContains(text, series), j >= 3) << series;
  }
  ExpectLintClean(text);
}

TEST(AgentMetrics, PipelineStagesByStage) {
  AgentMetrics metrics;
  v1::StepMetrics step = Step(1, 2.5);
  for (int s = 0; s < 2; ++s) {
    v1::StageMetrics* stage = step.add_stages();
    stage->set_stage(s);
    stage->set_bubble_fraction(0.125 * (s + 1));
    stage->set_compute_seconds(1.5);
    stage->set_p2p_bytes_sent(int64_t{1} << 33);
    stage->set_memory_peak_bytes(4096 * (s + 1));
  }
  metrics.ObserveStep({"p", 0}, step, 0);
  const std::string text = metrics.Serialize();
  EXPECT_THAT(text,
              HasSubstr("dstrain_train_pipeline_bubble_fraction{job_id=\"p\",stage=\"1\"} 0.25\n"));
  EXPECT_THAT(text,
              HasSubstr("dstrain_train_pipeline_compute_seconds{job_id=\"p\",stage=\"0\"} 1.5\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_pipeline_p2p_sent_bytes{job_id=\"p\",stage=\"0\"} "
                              "8589934592\n"));
  EXPECT_THAT(text, HasSubstr("dstrain_train_pipeline_memory_peak_bytes{job_id=\"p\",stage=\"1\"} "
                              "8192\n"));
  ExpectLintClean(text);
  metrics.TrainerEnded({"p", 0});
  EXPECT_THAT(metrics.Serialize(), Not(HasSubstr("dstrain_train_pipeline_bubble_fraction{")));
}

TEST(AgentMetrics, OffloadOnlyWhenReported) {
  AgentMetrics metrics;
  metrics.ObserveStep({"o", 0}, Step(1, 2.5), 0);
  metrics.ObserveOffload({"o", 0}, std::nullopt, std::nullopt);  // no offload
  EXPECT_THAT(metrics.Serialize(), Not(HasSubstr("dstrain_train_nvme_bytes{")));
  EXPECT_THAT(metrics.Serialize(), Not(HasSubstr("dstrain_train_swap_wait_seconds_total{")));
  metrics.ObserveOffload({"o", 0}, int64_t{3} << 30, 0.25);
  metrics.ObserveOffload({"o", 0}, int64_t{3} << 30, 0.5);
  std::string text = metrics.Serialize();
  EXPECT_THAT(text, HasSubstr("dstrain_train_nvme_bytes{job_id=\"o\",rank=\"0\"} 3221225472\n"));
  EXPECT_THAT(text,
              HasSubstr("dstrain_train_swap_wait_seconds_total{job_id=\"o\",rank=\"0\"} 0.75\n"));
  ExpectLintClean(text);
  // The gauge goes with the trainer; the counter keeps its total.
  metrics.TrainerEnded({"o", 0});
  text = metrics.Serialize();
  EXPECT_THAT(text, Not(HasSubstr("dstrain_train_nvme_bytes{")));
  EXPECT_THAT(text,
              HasSubstr("dstrain_train_swap_wait_seconds_total{job_id=\"o\",rank=\"0\"} 0.75\n"));
}

TEST(AgentMetrics, DeviceMemoryOnlyWhenReported) {
  AgentMetrics metrics;
  metrics.ObserveStep({"d", 0}, Step(1, 2.5), 0);
  metrics.ObserveDeviceMemory({"d", 0}, std::nullopt, std::nullopt);  // a CPU trainer's line
  EXPECT_THAT(metrics.Serialize(), Not(HasSubstr("dstrain_worker_device_memory_bytes{")));
  metrics.ObserveDeviceMemory({"d", 0}, int64_t{3} << 33, std::nullopt);
  metrics.ObserveDeviceMemory({"d", 1}, std::nullopt, int64_t{5} << 30);
  std::string text = metrics.Serialize();
  EXPECT_THAT(
      text,
      HasSubstr("dstrain_worker_device_memory_bytes{job_id=\"d\",rank=\"0\",state=\"in_use\"} "
                "25769803776\n"));
  EXPECT_THAT(text, Not(HasSubstr("{job_id=\"d\",rank=\"0\",state=\"peak\"}")));
  EXPECT_THAT(
      text, HasSubstr("dstrain_worker_device_memory_bytes{job_id=\"d\",rank=\"1\",state=\"peak\"} "
                      "5368709120\n"));
  ExpectLintClean(text);
  metrics.ObserveDeviceMemory({"d", 0}, int64_t{1} << 30, int64_t{4} << 30);
  text = metrics.Serialize();
  EXPECT_THAT(text, HasSubstr("{job_id=\"d\",rank=\"0\",state=\"in_use\"} 1073741824\n"));
  EXPECT_THAT(text, HasSubstr("{job_id=\"d\",rank=\"0\",state=\"peak\"} 4294967296\n"));
  // Gone with the trainer, like its other gauges.
  metrics.TrainerEnded({"d", 0});
  metrics.TrainerEnded({"d", 1});
  EXPECT_THAT(metrics.Serialize(), Not(HasSubstr("dstrain_worker_device_memory_bytes{")));
  ExpectLintClean(metrics.Serialize());
}

TEST(MetricsServer, ServesMetricsOverHttp) {
  AgentMetrics metrics;
  metrics.SetSlots(3);
  auto server = MetricsServer::Start("127.0.0.1:0", metrics.collectable());
  ASSERT_THAT(server, IsOk());
  ASSERT_GT((*server)->port(), 0);
  auto body = testing::HttpGet((*server)->port(), "/metrics");
  ASSERT_THAT(body, IsOk());
  EXPECT_THAT(*body, HasSubstr("# HELP dstrain_worker_slots "));
  EXPECT_THAT(*body, HasSubstr("\ndstrain_worker_slots 3\n"));
}

TEST(MetricsServer, ABusyPortIsUnavailable) {
  AgentMetrics metrics;
  auto first = MetricsServer::Start("127.0.0.1:0", metrics.collectable());
  ASSERT_THAT(first, IsOk());
  auto second =
      MetricsServer::Start("127.0.0.1:" + std::to_string((*first)->port()), metrics.collectable());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace dstrain::agent
