#include "coordinator/server/job_validation.h"

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/jobspec/job_device.h"
#include "common/paths/beneath.h"
#include "common/status/status_macros.h"
#include "worker/config/config.h"

namespace dstrain::coordinator {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

// INVALID_ARGUMENT naming `field` unless `path` ("" = unused) lies under `root`.
absl::Status CheckUnderRoot(const std::string& path, const std::string& root,
                            absl::string_view field) {
  if (path.empty() || root == "/") return absl::OkStatus();
  const std::string normal = paths::NormalizeLexically(path);
  if (normal != root && !absl::StartsWith(normal, absl::StrCat(root, "/"))) {
    return Invalid(field, absl::StrCat("\"", path, "\" is outside the data root ", root));
  }
  // Read as written it is inside. Where the root exists on this host too (the coordinator shares
  // the file system with its workers), a symlink must not lead out either; the workers check
  // again on theirs (dstrain-worker --data-root).
  if (access(root.c_str(), F_OK) != 0) return absl::OkStatus();
  if (const absl::Status resolved = paths::CheckBeneath(root, normal, field); !resolved.ok()) {
    return absl::InvalidArgumentError(resolved.message());
  }
  return absl::OkStatus();
}

}  // namespace

bool IsValidJobId(const std::string& id) {
  if (id.empty() || id.size() > 63 || id[0] < 'a' || id[0] > 'z') return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

int KeepLastOf(const std::string& spec_json) {
  const nlohmann::json spec = nlohmann::json::parse(spec_json, nullptr, /*allow_exceptions=*/false);
  if (!spec.is_object() || !spec.contains("job") || !spec["job"].is_object()) return 0;
  const nlohmann::json keep = spec["job"].value("keep_last", nlohmann::json());
  return keep.is_number_integer() ? keep.get<int>() : 0;
}

int64_t CheckpointEveryOf(const std::string& spec_json) {
  const nlohmann::json spec = nlohmann::json::parse(spec_json, nullptr, /*allow_exceptions=*/false);
  if (!spec.is_object() || !spec.contains("job") || !spec["job"].is_object()) return 0;
  const nlohmann::json every = spec["job"].value("checkpoint_every", nlohmann::json());
  return every.is_number_integer() ? every.get<int64_t>() : 0;
}

v1::JobDevice DeviceOf(const v1::Job& job) {
  if (job.device() != v1::JOB_DEVICE_UNSPECIFIED) return job.device();
  const nlohmann::json spec =
      nlohmann::json::parse(job.spec_json(), nullptr, /*allow_exceptions=*/false);
  const absl::StatusOr<v1::JobDevice> device = jobspec::JobDeviceOf(spec);
  return device.ok() ? *device : v1::JOB_DEVICE_AUTO;
}

absl::StatusOr<ValidatedJob> ValidateSubmission(const v1::SubmitJobRequest& request,
                                                const SubmissionLimits& limits) {
  if (!IsValidJobId(request.job_id())) {
    return Invalid("job_id", absl::StrCat("\"", request.job_id(),
                                          "\" is not 1-63 characters of [a-z0-9-] starting "
                                          "with a letter"));
  }
  if (request.spec_json().empty()) return Invalid("spec_json", "empty");
  if (request.spec_json().size() > limits.max_spec_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("spec_json: ", request.spec_json().size(),
                                                     " bytes is over the limit of ",
                                                     limits.max_spec_bytes, " (kMaxSpecBytes)"));
  }
  // The coordinator reads no file a submission names: a spec must arrive self-contained
  // (`dstrain submit` inlines the ds_config). Checked before the parser, which would read it, and
  // read as that parser reads it: with comments (else a spec starting with one got past).
  {
    const nlohmann::json top = nlohmann::json::parse(request.spec_json(), nullptr,
                                                     /*allow_exceptions=*/false,
                                                     /*ignore_comments=*/true);
    if (top.is_object() && top.contains("deepspeed_config")) {
      return Invalid("spec_json: deepspeed_config",
                     "a submitted job must be self-contained: the coordinator reads no file a "
                     "submission names (dstrain submit inlines the ds_config)");
    }
  }
  const std::string root = paths::NormalizeLexically(limits.data_root);
  // The trainer's own parser: unknown keys, types, batch rules, unsupported features.
  absl::StatusOr<config::JobSpec> spec = config::ParseJobSpec(request.spec_json(), root);
  if (!spec.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("spec_json: ", spec.status().message()));
  }
  const int world = spec->job.world_size;
  if (world < 1 || world > limits.max_world_size) {
    return Invalid("spec_json: job.world_size",
                   absl::StrCat(world, " (must be 1..", limits.max_world_size, ")"));
  }
  if (spec->job.train_steps > limits.max_train_steps) {
    return Invalid("spec_json: job.train_steps",
                   absl::StrCat(spec->job.train_steps, " (at most ", limits.max_train_steps, ")"));
  }
  const config::ModelConfig& m = spec->model;
  // GPT-2 shape: 12·L·C² in the blocks plus the embeddings (a bound, not the exact count).
  const double params = 12.0 * m.n_layer * double(m.n_embd) * m.n_embd +
                        double(m.padded_vocab_size + m.block_size) * m.n_embd;
  if (params > double(limits.max_parameters)) {
    return Invalid("spec_json: model", absl::StrCat("about ", params, " parameters (at most ",
                                                    limits.max_parameters, ")"));
  }
  DT_RETURN_IF_ERROR(CheckUnderRoot(spec->data.train, root, "spec_json: data.train"));
  DT_RETURN_IF_ERROR(CheckUnderRoot(spec->data.val, root, "spec_json: data.val"));
  DT_RETURN_IF_ERROR(CheckUnderRoot(m.init_from, root, "spec_json: model.init_from"));
  DT_RETURN_IF_ERROR(
      CheckUnderRoot(spec->job.checkpoint_dir, root, "spec_json: job.checkpoint_dir"));
  // Offload's swap files are created, written and removed there (docs/offload.md, "Files").
  DT_RETURN_IF_ERROR(CheckUnderRoot(spec->zero.offload_optimizer.nvme_path, root,
                                    "spec_json: zero_optimization.offload_optimizer.nvme_path"));
  DT_RETURN_IF_ERROR(CheckUnderRoot(spec->zero.offload_param.nvme_path, root,
                                    "spec_json: zero_optimization.offload_param.nvme_path"));

  ValidatedJob out;
  out.job_id = request.job_id();
  out.name = spec->job.name.empty() ? request.job_id() : spec->job.name;
  // With its notes (among them one per key the job sets that has no effect): workers ignore
  // them on input, but they stay with the job for people who read its spec.
  out.spec_json = spec->effective.dump();
  out.world_size = world;
  out.train_steps = spec->job.train_steps;
  out.max_restarts = spec->job.max_restarts;
  out.keep_last = spec->job.keep_last;
  out.pipeline_stages = spec->pipeline.stages;
  switch (spec->job.device) {
    case config::JobDevice::kCpu:
      out.device = v1::JOB_DEVICE_CPU;
      break;
    case config::JobDevice::kCuda:
      out.device = v1::JOB_DEVICE_CUDA;
      break;
    case config::JobDevice::kAuto:
      out.device = v1::JOB_DEVICE_AUTO;
      break;
  }
  return out;
}

}  // namespace dstrain::coordinator
