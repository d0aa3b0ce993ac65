#include "common/jobspec/job_device.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dstrain::jobspec {
namespace {

using json = nlohmann::json;

bool HasDeviceKey(const json& spec) {
  if (!spec.is_object()) return false;
  const auto job = spec.find("job");
  return job != spec.end() && job->is_object() && job->contains("device");
}

}  // namespace

const char* JobDeviceName(v1::JobDevice device) {
  switch (device) {
    case v1::JOB_DEVICE_CPU:
      return "cpu";
    case v1::JOB_DEVICE_CUDA:
      return "cuda";
    default:
      return "auto";
  }
}

absl::StatusOr<v1::JobDevice> ParseJobDevice(absl::string_view name) {
  if (name == "auto") return v1::JOB_DEVICE_AUTO;
  if (name == "cpu") return v1::JOB_DEVICE_CPU;
  if (name == "cuda") return v1::JOB_DEVICE_CUDA;
  return absl::InvalidArgumentError(
      absl::StrCat("must be \"auto\", \"cpu\" or \"cuda\", got \"", name.substr(0, 64), "\""));
}

absl::StatusOr<v1::JobDevice> JobDeviceOf(const json& spec) {
  if (!HasDeviceKey(spec)) return v1::JOB_DEVICE_AUTO;
  const json& value = spec.at("job").at("device");
  if (!value.is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job.device: must be a string (\"auto\", \"cpu\" or \"cuda\"), got ", value.type_name()));
  }
  absl::StatusOr<v1::JobDevice> device = ParseJobDevice(value.get<std::string>());
  if (!device.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("job.device: ", device.status().message()));
  }
  return device;
}

}  // namespace dstrain::jobspec
