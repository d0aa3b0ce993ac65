#include "client/cli/plot.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::cli {
namespace {

using ::dstrain::testing::IsOk;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

v1::StepMetrics Record(int32_t attempt, int64_t step, double loss) {
  v1::StepMetrics m;
  m.set_attempt(attempt);
  m.set_step(step);
  m.set_loss(loss);
  m.set_lr(1e-3 * step);
  m.set_tokens_per_second(1000 + step);
  return m;
}

std::string TestDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return tmp != nullptr ? tmp : "/tmp";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

uint32_t BigEndian32(const std::string& bytes, size_t at) {
  return (uint32_t{static_cast<unsigned char>(bytes[at])} << 24) |
         (uint32_t{static_cast<unsigned char>(bytes[at + 1])} << 16) |
         (uint32_t{static_cast<unsigned char>(bytes[at + 2])} << 8) |
         uint32_t{static_cast<unsigned char>(bytes[at + 3])};
}

TEST(ParsePlotMetrics, TakesKnownNamesOnce) {
  auto names = ParsePlotMetrics("loss, val_loss,tokens_per_s");
  ASSERT_THAT(names, IsOk());
  EXPECT_THAT(*names, ElementsAre("loss", "val_loss", "tokens_per_s"));
  EXPECT_THAT(ParsePlotMetrics(kDefaultPlotMetrics), IsOk());
  auto unknown = ParsePlotMetrics("loss,perplexity");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("--metrics: unknown metric 'perplexity'"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("tokens_per_s"));
  EXPECT_EQ(ParsePlotMetrics("loss,loss").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CollectSeries, ALaterAttemptReplacesTheStepsItRanAgain) {
  std::vector<v1::StepMetrics> records;
  for (int step = 1; step <= 5; ++step) records.push_back(Record(1, step, 10 - step));
  records[1].set_val_loss(8.5);
  records[3].set_checkpoint_seconds(0.25);
  // Attempt 2 resumed from the checkpoint of step 2: steps 3 and 4 again, 5 not yet.
  records.push_back(Record(2, 3, 6.5));
  records.push_back(Record(2, 4, 5.5));
  records.back().set_val_loss(std::nan(""));
  const PlotData data = CollectSeries(records, {"loss", "val_loss", "checkpoint_s", "lr"});
  EXPECT_THAT(data.at("loss"), ElementsAre(Pair(1, 9), Pair(2, 8), Pair(3, 6.5), Pair(4, 5.5)));
  ASSERT_EQ(data.at("val_loss").size(), 2u);
  EXPECT_EQ(data.at("val_loss").at(2), 8.5);
  EXPECT_TRUE(std::isnan(data.at("val_loss").at(4)));
  EXPECT_TRUE(data.at("checkpoint_s").empty()) << "step 4's save was in the replaced attempt";
  EXPECT_DOUBLE_EQ(data.at("lr").at(3), 3e-3);
  EXPECT_EQ(data.count("tokens_per_s"), 0u);
}

TEST(ReadMetricsFile, ParsesTheTrainersLinesAndNamesABadLine) {
  const std::string path = TestDir() + "/metrics.jsonl";
  std::ofstream(path) << R"({"step":1,"loss":5.5,"tokens_per_s":100,"step_ms":250})"
                      << "\n"
                      << R"({"step":2,"loss":5.0,"val_loss":5.25})"
                      << "\n";
  auto records = ReadMetricsFile(path);
  ASSERT_THAT(records, IsOk());
  ASSERT_EQ(records->size(), 2u);
  EXPECT_EQ((*records)[0].step_seconds(), 0.25);
  EXPECT_EQ((*records)[1].val_loss(), 5.25);
  std::ofstream(path, std::ios::app) << "not json\n";
  auto bad = ReadMetricsFile(path);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("metrics.jsonl:3: "));
  EXPECT_EQ(ReadMetricsFile(TestDir() + "/missing.jsonl").status().code(),
            absl::StatusCode::kNotFound);
}

// A real PNG from matplotlib: the signature, and the size the panels make (8 in wide, 2.2 in per
// panel + 0.8, at 110 dpi), so the picture has the panels asked for.
TEST(RenderPlot, DrawsOnePanelPerMetricWithValLossBesideLoss) {
  std::vector<v1::StepMetrics> records;
  for (int step = 1; step <= 20; ++step) {
    records.push_back(Record(1, step, 5.0 / step));
    if (step % 5 == 0) records.back().set_val_loss(6.0 / step);
  }
  const std::string png = TestDir() + "/run.png";
  ASSERT_THAT(
      RenderPlot(CollectSeries(records, {"loss", "val_loss", "tokens_per_s"}), "job t", png),
      IsOk());
  std::string bytes = ReadFile(png);
  ASSERT_GT(bytes.size(), 24u);
  EXPECT_EQ(bytes.substr(0, 8), "\x89PNG\r\n\x1a\n");
  EXPECT_EQ(bytes.substr(12, 4), "IHDR");
  EXPECT_EQ(BigEndian32(bytes, 16), 880u);                                           // width
  EXPECT_EQ(BigEndian32(bytes, 20), static_cast<uint32_t>(std::lround(5.2 * 110)));  // 2 panels
  EXPECT_FALSE(std::filesystem::exists(png + ".partial"));

  ASSERT_THAT(RenderPlot(CollectSeries(records, {"loss", "lr", "tokens_per_s"}), "job t", png),
              IsOk());
  bytes = ReadFile(png);
  EXPECT_EQ(BigEndian32(bytes, 20), static_cast<uint32_t>(std::lround(7.4 * 110)));  // 3 panels

  const std::string svg = TestDir() + "/run.svg";
  ASSERT_THAT(RenderPlot(CollectSeries(records, {"loss"}), "job t", svg), IsOk());
  EXPECT_THAT(ReadFile(svg), HasSubstr("<svg"));
}

TEST(RenderPlot, ClearErrorsAndNoPictureOnFailure) {
  std::vector<v1::StepMetrics> records = {Record(1, 1, 2.0), Record(1, 2, 1.5)};
  const PlotData data = CollectSeries(records, {"loss"});
  const std::string out = TestDir() + "/bad.png";
  EXPECT_EQ(RenderPlot(data, "t", TestDir() + "/run.jpg").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RenderPlot(CollectSeries(records, {"val_loss"}), "t", out).code(),
            absl::StatusCode::kInvalidArgument)
      << "no points";
  const absl::Status no_python = RenderPlot(data, "t", out, "/nonexistent/python3");
  EXPECT_EQ(no_python.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(no_python.message(), HasSubstr("python3-matplotlib"));
  // An interpreter that cannot import matplotlib (site-packages off).
  const std::string bare = TestDir() + "/bare-python";
  std::ofstream(bare) << "#!/bin/sh\nexec /usr/bin/python3 -I -S \"$@\"\n";
  chmod(bare.c_str(), 0755);
  const absl::Status no_matplotlib = RenderPlot(data, "t", out, bare);
  EXPECT_EQ(no_matplotlib.code(), absl::StatusCode::kFailedPrecondition) << no_matplotlib;
  EXPECT_THAT(no_matplotlib.message(), HasSubstr("matplotlib"));
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out + ".partial"));
}

}  // namespace
}  // namespace dstrain::cli
