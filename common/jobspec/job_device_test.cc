#include "common/jobspec/job_device.h"

#include "absl/status/status.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::jobspec {
namespace {

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

}  // namespace
}  // namespace dstrain::jobspec
