// job.device: what a job asks to run on (docs/service.md, "Placement"): "auto" (the default),
// "cpu" or "cuda". The service reads it: the coordinator places the job's ranks on GPU or CPU
// slots by it, and each trainer learns its device from its command line (--device), so a trainer
// never has to resolve "auto" itself.
//
// The job-file parser (worker/config) is being taught the key; until it knows it, it rejects
// job.device as an unknown key. ParseWithJobDevice bridges the two: with a parser that knows the
// key the spec is parsed as it is; with one that does not, the key is checked here and taken out
// before the parser sees it, and the device travels beside the spec (v1::Job.device and the
// trainer's --device), so the stored spec stays one that every trainer can parse.
#pragma once

#include <functional>
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

// The job-file parser on a spec's text: the effective configuration, or the parser's error.
using ParseFn = std::function<absl::StatusOr<nlohmann::json>(const std::string& spec_text)>;

struct DeviceParse {
  v1::JobDevice device = v1::JOB_DEVICE_AUTO;
  // The parser does not know job.device: it was given the spec without the key, and its
  // effective configuration lacks it.
  bool taken_out = false;
};

// Parses `spec_text` with `parse`, reading job.device ahead of it. `parse` is called once, or a
// second time on the spec without job.device when the first call failed and the spec has the
// key; on OK the last call `parse` answered OK is the one that counts. Errors: job.device's own
// (INVALID_ARGUMENT "job.device: ..."), else the parser's.
absl::StatusOr<DeviceParse> ParseWithJobDevice(const std::string& spec_text, const ParseFn& parse);

}  // namespace dstrain::jobspec
