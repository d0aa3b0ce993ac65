#include "worker/agent/metrics_tail.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::agent {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string TempPath(const std::string& name) {
  return std::string(getenv("TEST_TMPDIR")) + "/" + name;
}

void Append(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::app | std::ios::binary);
  out << text;
}

TEST(MetricsTail, MissingFileIsNotAnError) {
  MetricsTail tail(TempPath("never.jsonl"));
  std::vector<std::string> lines;
  EXPECT_THAT(tail.Poll(&lines), IsOk());
  EXPECT_THAT(lines, IsEmpty());
}

TEST(MetricsTail, HandsOutCompleteLinesOnlyOnce) {
  const std::string path = TempPath("grow.jsonl");
  std::remove(path.c_str());
  MetricsTail tail(path);
  std::vector<std::string> lines;
  Append(path, "{\"step\":1}\n{\"step\":");
  ASSERT_THAT(tail.Poll(&lines), IsOk());
  EXPECT_THAT(lines, ElementsAre("{\"step\":1}"));
  lines.clear();
  ASSERT_THAT(tail.Poll(&lines), IsOk());
  EXPECT_THAT(lines, IsEmpty());
  Append(path, "2}\n\n{\"step\":3}\n");
  ASSERT_THAT(tail.Poll(&lines), IsOk());
  EXPECT_THAT(lines, ElementsAre("{\"step\":2}", "{\"step\":3}"));
}

TEST(MetricsTail, StartsOverWhenTheFileIsTruncatedOrReplaced) {
  const std::string path = TempPath("restart.jsonl");
  std::remove(path.c_str());
  MetricsTail tail(path);
  std::vector<std::string> lines;
  Append(path, "{\"step\":1}\n{\"step\":2}\n");
  ASSERT_THAT(tail.Poll(&lines), IsOk());
  ASSERT_EQ(lines.size(), 2u);
  lines.clear();
  { std::ofstream truncate(path, std::ios::trunc); }
  Append(path, "{\"step\":9}\n");
  ASSERT_THAT(tail.Poll(&lines), IsOk());
  EXPECT_THAT(lines, ElementsAre("{\"step\":9}"));
  lines.clear();
  // Replaced by a new file that is longer than what was read.
  const std::string other = TempPath("restart.new");
  Append(other, "{\"step\":10}\n{\"step\":11}\n");
  ASSERT_EQ(rename(other.c_str(), path.c_str()), 0);
  ASSERT_THAT(tail.Poll(&lines), IsOk());
  EXPECT_THAT(lines, ElementsAre("{\"step\":10}", "{\"step\":11}"));
}

TEST(MetricsTail, ReadsABigBacklogInPieces) {
  const std::string path = TempPath("big.jsonl");
  std::remove(path.c_str());
  std::string text;
  for (int i = 1; i <= 1000; ++i) text += "{\"step\":" + std::to_string(i) + "}\n";
  Append(path, text);
  MetricsTail tail(path, /*max_read=*/1000);
  std::vector<std::string> lines;
  for (int i = 0; i < 100 && lines.size() < 1000; ++i) ASSERT_THAT(tail.Poll(&lines), IsOk());
  ASSERT_EQ(lines.size(), 1000u);
  EXPECT_EQ(lines.back(), "{\"step\":1000}");
}

TEST(StepMetricsParser, MapsAPipelinedJobsStages) {
  StepMetricsParser parser(/*attempt=*/1);
  auto p = parser.Parse(
      R"({"step":3,"stages":[{"stage":0,"step_s":0.5,"compute_s":0.25,"bubble_s":0.125,)"
      R"("schedule_s":0.375,"bubble_fraction":0.333,"p2p_bytes_sent":68719476736,)"
      R"("mem_peak_bytes":1000,"activations_bytes":600},"junk",{"stage":1}]})",
      absl::Now());
  ASSERT_THAT(p, IsOk());
  const v1::StepMetrics& m = p->metrics;
  ASSERT_EQ(m.stages_size(), 2) << "a non-object entry is skipped";
  const v1::StageMetrics& s = m.stages(0);
  EXPECT_EQ(s.stage(), 0);
  EXPECT_EQ(s.step_seconds(), 0.5);
  EXPECT_EQ(s.compute_seconds(), 0.25);
  EXPECT_EQ(s.bubble_seconds(), 0.125);
  EXPECT_EQ(s.schedule_seconds(), 0.375);
  EXPECT_EQ(s.bubble_fraction(), 0.333);
  EXPECT_EQ(s.p2p_bytes_sent(), int64_t{1} << 36);
  EXPECT_EQ(s.memory_peak_bytes(), 1000);
  EXPECT_EQ(s.activations_bytes(), 600);
  EXPECT_EQ(m.stages(1).stage(), 1);
  EXPECT_EQ(m.stages(1).bubble_fraction(), 0.0);
}

TEST(StepMetricsParser, MapsTheTrainerKeys) {
  StepMetricsParser parser(/*attempt=*/3);
  const absl::Time read_time = absl::FromUnixSeconds(1'700'000'000);
  auto p = parser.Parse(
      R"({"step":7,"loss":2.5,"lr":0.001,"grad_norm":1.25,"tokens_per_s":1000,"step_ms":250,)"
      R"("loss_scale":1,"skipped":false,"mem_bytes":{"params":100,"grads":50},)"
      R"("mem_peak_bytes":{"params":1},"mem_peak_total_bytes":5,"comm_bytes":4096,)"
      R"("comm_s":0.125,"checkpoint_s":1.5,"checkpoint_bytes":123456789012})",
      read_time);
  ASSERT_THAT(p, IsOk());
  const v1::StepMetrics& m = p->metrics;
  EXPECT_EQ(m.step(), 7);
  EXPECT_EQ(m.loss(), 2.5);
  EXPECT_EQ(m.lr(), 0.001);
  EXPECT_EQ(m.grad_norm(), 1.25);
  EXPECT_EQ(m.tokens_per_second(), 1000);
  EXPECT_EQ(m.step_seconds(), 0.25);
  EXPECT_EQ(m.loss_scale(), 1);
  EXPECT_EQ(m.skipped_steps(), 0);
  EXPECT_FALSE(m.has_val_loss());
  EXPECT_EQ(m.memory_bytes().at("params"), 100);
  EXPECT_EQ(m.memory_bytes().at("grads"), 50);
  EXPECT_EQ(m.memory_bytes_size(), 2);
  EXPECT_EQ(m.comm_bytes(), 4096);
  EXPECT_EQ(m.comm_wait_seconds(), 0.125);
  EXPECT_EQ(m.checkpoint_seconds(), 1.5);
  EXPECT_EQ(m.checkpoint_bytes(), 123456789012);
  EXPECT_EQ(m.attempt(), 3);
  EXPECT_EQ(m.time().seconds(), 1'700'000'000);
  EXPECT_EQ(p->skipped_increment, 0);
  EXPECT_FALSE(p->device_mem_bytes.has_value()) << "a CPU trainer's line has none";
  EXPECT_EQ(m.stages_size(), 0) << "not a pipelined job's line";
  EXPECT_FALSE(p->device_mem_peak_bytes.has_value());
}

TEST(StepMetricsParser, ReadsDeviceMemory) {
  StepMetricsParser parser(1);
  const absl::Time now = absl::Now();
  auto p = parser.Parse(
      R"({"step":1,"device_mem_bytes":81604378624,"device_mem_peak_bytes":9.5e10})", now);
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(p->device_mem_bytes, int64_t{81604378624});
  EXPECT_EQ(p->device_mem_peak_bytes, int64_t{95000000000});
  // Only the peak, or values that are no byte counts: what is absent stays absent.
  p = parser.Parse(R"({"step":2,"device_mem_bytes":null,"device_mem_peak_bytes":-3})", now);
  ASSERT_THAT(p, IsOk());
  EXPECT_FALSE(p->device_mem_bytes.has_value());
  EXPECT_FALSE(p->device_mem_peak_bytes.has_value());
  p = parser.Parse(R"({"step":3,"device_mem_peak_bytes":"lots"})", now);
  ASSERT_THAT(p, IsOk());
  EXPECT_FALSE(p->device_mem_peak_bytes.has_value());
}

TEST(StepMetricsParser, ReadsOffload) {
  StepMetricsParser parser(1);
  const absl::Time now = absl::Now();
  auto p = parser.Parse(R"({"step":1,"nvme_bytes":1462272,"swap_wait_s":0.0125})", now);
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(p->nvme_bytes, int64_t{1462272});
  EXPECT_EQ(p->swap_wait_seconds, 0.0125);
  p = parser.Parse(R"({"step":2,"nvme_bytes":-1,"swap_wait_s":"slow"})", now);
  ASSERT_THAT(p, IsOk());
  EXPECT_FALSE(p->nvme_bytes.has_value());
  EXPECT_FALSE(p->swap_wait_seconds.has_value());
  p = parser.Parse(R"({"step":3})", now);
  ASSERT_THAT(p, IsOk());
  EXPECT_FALSE(p->nvme_bytes.has_value()) << "no offload";
}

TEST(StepMetricsParser, ReadsACheckpointFailure) {
  StepMetricsParser parser(1);
  const absl::Time now = absl::Now();
  auto p = parser.Parse(R"({"step":4,"loss":2.5,"checkpoint_error":"disk full"})", now);
  ASSERT_THAT(p, IsOk());
  EXPECT_TRUE(p->checkpoint_failed);
  EXPECT_EQ(p->metrics.step(), 4);
  p = parser.Parse(R"({"step":5,"checkpoint_s":0.5})", now);
  ASSERT_THAT(p, IsOk());
  EXPECT_FALSE(p->checkpoint_failed);
}

TEST(StepMetricsParser, CountsSkippedStepsAndReadsOptionalKeys) {
  StepMetricsParser parser(1);
  const absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  auto a = parser.Parse(R"({"step":1,"skipped":true,"grad_norm":null})", now);
  ASSERT_THAT(a, IsOk());
  EXPECT_EQ(a->metrics.skipped_steps(), 1);
  EXPECT_EQ(a->skipped_increment, 1);
  EXPECT_TRUE(std::isnan(a->metrics.grad_norm()));
  auto b = parser.Parse(R"({"step":2,"skipped":false,"val_loss":2.75,"time":1700000001.5})", now);
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(b->metrics.skipped_steps(), 1);
  EXPECT_EQ(b->skipped_increment, 0);
  ASSERT_TRUE(b->metrics.has_val_loss());
  EXPECT_EQ(b->metrics.val_loss(), 2.75);
  EXPECT_EQ(b->metrics.time().seconds(), 1'700'000'001);
  EXPECT_EQ(b->metrics.time().nanos(), 500'000'000);
  // A cumulative count instead of the per-step flag.
  auto c = parser.Parse(R"({"step":3,"skipped":4})", now);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->metrics.skipped_steps(), 4);
  EXPECT_EQ(c->skipped_increment, 3);
}

TEST(StepMetricsParser, RejectsLinesWithoutAStep) {
  StepMetricsParser parser(1);
  const absl::Time now = absl::Now();
  EXPECT_THAT(parser.Parse("not json", now),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a JSON object")));
  EXPECT_THAT(parser.Parse("[1,2]", now),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a JSON object")));
  EXPECT_THAT(parser.Parse(R"({"loss":1})", now),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"step\"")));
  EXPECT_THAT(parser.Parse(R"({"step":"1"})", now),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"step\"")));
}

}  // namespace
}  // namespace dstrain::agent
