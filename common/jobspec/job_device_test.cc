#include "common/jobspec/job_device.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::jobspec {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;
using json = nlohmann::json;

TEST(JobDeviceTest, NamesAndValues) {
  EXPECT_STREQ(JobDeviceName(v1::JOB_DEVICE_UNSPECIFIED), "auto");
  EXPECT_STREQ(JobDeviceName(v1::JOB_DEVICE_AUTO), "auto");
  EXPECT_STREQ(JobDeviceName(v1::JOB_DEVICE_CPU), "cpu");
  EXPECT_STREQ(JobDeviceName(v1::JOB_DEVICE_CUDA), "cuda");
  for (v1::JobDevice d : {v1::JOB_DEVICE_AUTO, v1::JOB_DEVICE_CPU, v1::JOB_DEVICE_CUDA}) {
    EXPECT_EQ(ParseJobDevice(JobDeviceName(d)).value(), d);
  }
  EXPECT_THAT(ParseJobDevice("gpu"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got \"gpu\"")));
  EXPECT_THAT(ParseJobDevice("CUDA"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("CUDA")));
}

TEST(JobDeviceTest, JobDeviceOfASpec) {
  EXPECT_EQ(JobDeviceOf(json::parse(R"({"job": {"world_size": 2}})")).value(), v1::JOB_DEVICE_AUTO);
  EXPECT_EQ(JobDeviceOf(json::parse(R"({"model": {}})")).value(), v1::JOB_DEVICE_AUTO);
  EXPECT_EQ(JobDeviceOf(json::parse("[1]")).value(), v1::JOB_DEVICE_AUTO);
  EXPECT_EQ(JobDeviceOf(json::parse(R"({"job": {"device": "cuda"}})")).value(),
            v1::JOB_DEVICE_CUDA);
  EXPECT_EQ(JobDeviceOf(json::parse(R"({"job": {"device": "cpu"}})")).value(), v1::JOB_DEVICE_CPU);
  EXPECT_THAT(JobDeviceOf(json::parse(R"({"job": {"device": "tpu"}})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job.device: must be")));
  EXPECT_THAT(
      JobDeviceOf(json::parse(R"({"job": {"device": 1}})")),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job.device: must be a string")));
  EXPECT_THAT(JobDeviceOf(json::parse(R"({"job": {"device": null}})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job.device")));
}

// A stand-in for the job-file parser: strict about unknown keys in "job", and rejecting
// "bad": true anywhere in it. `knows_device` says whether it has the key (default "auto",
// "cuda" refused when "no_cuda" is set, as a parser with its own rules might).
class FakeParser {
 public:
  explicit FakeParser(bool knows_device) : knows_device_(knows_device) {}

  ParseFn Fn() {
    return [this](const std::string& text) -> absl::StatusOr<json> {
      seen.push_back(text);
      json spec = json::parse(text, nullptr, false, true);
      if (spec.is_discarded()) return absl::InvalidArgumentError("line 1: not JSON");
      json& job = spec["job"];
      for (const auto& [key, value] : job.items()) {
        if (key == "device" && knows_device_) continue;
        if (key != "world_size" && key != "bad" && key != "no_cuda") {
          return absl::InvalidArgumentError(absl::StrCat("job.", key, ": unknown key"));
        }
      }
      if (job.value("bad", false)) return absl::InvalidArgumentError("job.bad: is true");
      if (knows_device_) {
        if (!job.contains("device")) job["device"] = "auto";
        if (job.value("no_cuda", false) && job["device"] == "cuda") {
          return absl::InvalidArgumentError("job.device: cuda is off here");
        }
      }
      return spec;
    };
  }

  std::vector<std::string> seen;

 private:
  bool knows_device_;
};

TEST(ParseWithJobDeviceTest, WithoutTheKeyTheSpecIsParsedOnceAsItIs) {
  for (bool knows : {false, true}) {
    FakeParser parser(knows);
    const std::string text = R"({"job": {"world_size": 2}} // a comment)";
    absl::StatusOr<DeviceParse> got = ParseWithJobDevice(text, parser.Fn());
    ASSERT_THAT(got, IsOk());
    EXPECT_EQ(got->device, v1::JOB_DEVICE_AUTO);
    EXPECT_FALSE(got->taken_out);
    EXPECT_EQ(parser.seen, std::vector<std::string>{text});
  }
}

TEST(ParseWithJobDeviceTest, AParserThatKnowsTheKeyGetsTheSpecAsItIs) {
  FakeParser parser(/*knows_device=*/true);
  const std::string text = R"({"job": {"world_size": 2, "device": "cuda"}})";
  absl::StatusOr<DeviceParse> got = ParseWithJobDevice(text, parser.Fn());
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->device, v1::JOB_DEVICE_CUDA);
  EXPECT_FALSE(got->taken_out);
  EXPECT_EQ(parser.seen, std::vector<std::string>{text});
  // Its own rules about the value stand.
  EXPECT_THAT(
      ParseWithJobDevice(R"({"job": {"device": "cuda", "no_cuda": true}})", parser.Fn()),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job.device: cuda is off here")));
}

TEST(ParseWithJobDeviceTest, AParserThatDoesNotKnowTheKeyGetsTheSpecWithoutIt) {
  FakeParser parser(/*knows_device=*/false);
  absl::StatusOr<DeviceParse> got =
      ParseWithJobDevice(R"({"job": {"world_size": 4, "device": "cuda"}})", parser.Fn());
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->device, v1::JOB_DEVICE_CUDA);
  EXPECT_TRUE(got->taken_out);
  ASSERT_EQ(parser.seen.size(), 2u);
  EXPECT_EQ(json::parse(parser.seen[1]), json::parse(R"({"job": {"world_size": 4}})"));
}

TEST(ParseWithJobDeviceTest, Errors) {
  for (bool knows : {false, true}) {
    SCOPED_TRACE(knows);
    FakeParser parser(knows);
    // A bad value is refused before any parser sees it.
    EXPECT_THAT(ParseWithJobDevice(R"({"job": {"device": "gpu"}})", parser.Fn()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job.device: must be")));
    EXPECT_TRUE(parser.seen.empty());
    // Another problem is the parser's error.
    EXPECT_THAT(ParseWithJobDevice(R"({"job": {"device": "cpu", "bad": true}})", parser.Fn()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job.bad")));
    EXPECT_THAT(ParseWithJobDevice(R"({"job": {"device": "cpu", "typo": 1}})", parser.Fn()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job.typo: unknown key")));
    // Text that is not JSON goes to the parser as it is.
    EXPECT_THAT(ParseWithJobDevice("{\"job\": ", parser.Fn()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not JSON")));
  }
}

}  // namespace
}  // namespace dstrain::jobspec
