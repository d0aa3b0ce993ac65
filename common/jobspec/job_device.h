// job.device: what a job asks to run on (docs/service.md, "Placement"): "auto" (the default),
// "cpu" or "cuda", as the service's protos carry it. The coordinator places the job's ranks on
// GPU or CPU slots by it, and each trainer learns its device from its command line (--device),
// so a trainer under the service never resolves "auto" itself. The job-file parser
// (worker/config) checks the key; this is its wire form.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "proto/job.pb.h"

namespace dstrain::jobspec {

// "auto", "cpu", "cuda"; "auto" for JOB_DEVICE_UNSPECIFIED (a job stored before job.device).
const char* JobDeviceName(v1::JobDevice device);

// "auto", "cpu" or "cuda" as a JobDevice; INVALID_ARGUMENT naming the three otherwise.
absl::StatusOr<v1::JobDevice> ParseJobDevice(absl::string_view name);

// job.device of a job's JSON: JOB_DEVICE_AUTO when the key (or the job block) is absent;
// INVALID_ARGUMENT "job.device: ..." when it is not one of the three strings.
absl::StatusOr<v1::JobDevice> JobDeviceOf(const nlohmann::json& spec);

}  // namespace dstrain::jobspec
