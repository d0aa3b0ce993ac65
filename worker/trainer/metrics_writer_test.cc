#include "worker/trainer/metrics_writer.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"

namespace dstrain::trainer {
namespace {

using ::dstrain::testing::IsOk;

TEST(FormatDouble, RoundTripsExactly) {
  for (double v : {0.1, 1.0 / 3.0, 3.0e-4, 2.718281828459045, 1e300, -5e-324, 123456789.0}) {
    const std::string s = FormatDouble(v);
    EXPECT_EQ(std::strtod(s.c_str(), nullptr), v) << s;
  }
  EXPECT_EQ(FormatDouble(0.1), "0.1");  // shortest form, not 0.10000000000000001
  EXPECT_EQ(FormatDouble(std::numeric_limits<double>::infinity()), "null");
  EXPECT_EQ(FormatDouble(std::nan("")), "null");
}

TEST(MetricsWriter, WritesOneObjectPerLine) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/m.jsonl";
  {
    auto w = MetricsWriter::Open(path);
    ASSERT_THAT(w, IsOk());
    JsonLine a;
    a.Add("step", int64_t{1}).Add("loss", 2.5).Add("skipped", false).AddRaw("mem", "{\"x\":1}");
    ASSERT_THAT(w->Write(a), IsOk());
    JsonLine b;
    b.Add("step", int64_t{2});
    ASSERT_THAT(w->Write(b), IsOk());
  }
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(),
            "{\"step\":1,\"loss\":2.5,\"skipped\":false,\"mem\":{\"x\":1}}\n"
            "{\"step\":2}\n");
}

TEST(MetricsWriter, BadPathIsAnErrorAndEmptyPathDiscards) {
  EXPECT_FALSE(MetricsWriter::Open("/nonexistent-dir/x.jsonl").ok());
  auto w = MetricsWriter::Open("");
  ASSERT_THAT(w, IsOk());
  EXPECT_THAT(w->Write(JsonLine()), IsOk());
}

}  // namespace
}  // namespace dstrain::trainer
