// What SubmitJob checks before anything is stored (strict, with the key path: docs/job-file.md),
// and the canonical form of an accepted job.
//
// A submission is rejected with INVALID_ARGUMENT naming the field or key path when: the job id is
// malformed; the spec is not JSON, has an unknown key, a wrong type or a batch triple that does
// not multiply out (the trainer's own parser, worker/config); job.device is not "auto", "cpu" or
// "cuda"; a size is absurd (world size, parameter count, steps); or a path it names (data.train,
// data.val, model.init_from, job.checkpoint_dir) lies outside the coordinator's data root.
//
// job.device is read here ahead of the parser (common/jobspec/job_device.h): while the parser
// does not know the key, the stored spec goes without it and the device is kept in
// v1::Job.device, so every trainer can still parse the spec it is given.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/limits/limits.h"
#include "proto/job.pb.h"

namespace dstrain::coordinator {

struct SubmissionLimits {
  // Every path a job names must lie under this directory ("/" allows any absolute path).
  // Relative paths in a spec are taken relative to it.
  std::string data_root = "/";
  int max_world_size = 4096;
  int64_t max_parameters = int64_t{1} << 40;  // ~1.1e12
  int64_t max_train_steps = int64_t{1} << 40;
  size_t max_spec_bytes = limits::kMaxSpecBytes;
};

struct ValidatedJob {
  std::string job_id;
  std::string name;
  // The effective configuration (every default filled in, paths absolute) as JSON: what workers
  // receive, so every rank and every attempt trains on exactly the same job. Its `notes` are
  // those of `dstrain validate`, including one per key the job sets that has no effect
  // (docs/configuration.md, "Keys without effect").
  std::string spec_json;
  int32_t world_size = 0;
  int64_t train_steps = 0;
  int32_t max_restarts = 0;
  int32_t keep_last = 0;
  // job.device: JOB_DEVICE_AUTO when the spec does not say.
  v1::JobDevice device = v1::JOB_DEVICE_AUTO;
  int32_t pipeline_stages = 1;  // job.pipeline_stages
};

// True for 1 to 63 characters of [a-z0-9-] starting with a letter.
bool IsValidJobId(const std::string& id);

absl::StatusOr<ValidatedJob> ValidateSubmission(const v1::SubmitJobRequest& request,
                                                const SubmissionLimits& limits);

// job.keep_last of a stored job's effective spec (0 when it cannot be read: keep everything).
int KeepLastOf(const std::string& spec_json);
// job.checkpoint_every of a stored job's effective spec (0 when it cannot be read).
int64_t CheckpointEveryOf(const std::string& spec_json);

// What a stored job asks to run on: Job.device, or for a record without it job.device of its
// spec; JOB_DEVICE_AUTO when neither says (or the spec cannot be read).
v1::JobDevice DeviceOf(const v1::Job& job);

}  // namespace dstrain::coordinator
