// Fuzzes SubmitJob's validation (coordinator/server/job_validation.h), what the coordinator
// checks of a submission from anyone who can reach it, before anything is stored. An input is
// either "P" and a serialized SubmitJobRequest, or a line holding the job id followed by the spec
// JSON (readable seeds, and mutations that reach the spec's parser). Bad requests must be
// INVALID_ARGUMENT (RESOURCE_EXHAUSTED for a spec over the size limit), never a crash. Properties
// besides:
//   - the coordinator reads no file a submission names: a spec that holds deepspeed_config, read
//     as the trainer's parser reads it (comments allowed), is refused as not self-contained;
//   - an accepted job's id is valid, its world size within the limits, and the effective spec it
//     stores parses again with the trainer's parser (every rank parses it).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "coordinator/server/job_validation.h"
#include "google/protobuf/stubs/logging.h"
#include "worker/config/config.h"
#include "worker/config/strict_json.h"

namespace {

// A data root that exists (so symbolic links under it are checked too) with a data file in it.
const std::string& DataRoot() {
  static const std::string* root = [] {
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/submit_fuzz.XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    return new std::string(pattern);
  }();
  return *root;
}

void Fail(const char* what, const dstrain::v1::SubmitJobRequest& request,
          const absl::Status& status) {
  std::fprintf(stderr, "%s\njob_id: %s\nspec_json: %s\nstatus: %s\n", what,
               request.job_id().c_str(), request.spec_json().c_str(), status.ToString().c_str());
  std::abort();
}

bool NamesDeepSpeedConfig(const std::string& spec) {
  absl::StatusOr<nlohmann::json> root = dstrain::config::internal::ParseStrictJson(spec, "job");
  return root.ok() && root->is_object() && root->contains("deepspeed_config");
}

}  // namespace

// Protobuf logs every string field that is not UTF-8; mutated inputs hold many.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  dstrain::v1::SubmitJobRequest request;
  if (absl::StartsWith(input, "P")) {
    if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  } else {
    const size_t newline = input.find('\n');
    if (newline == absl::string_view::npos) return 0;
    request.set_job_id(std::string(input.substr(0, newline)));
    request.set_spec_json(std::string(input.substr(newline + 1)));
  }
  dstrain::coordinator::SubmissionLimits limits;
  limits.data_root = DataRoot();
  limits.max_world_size = 64;
  limits.max_spec_bytes = 64 << 10;
  const absl::StatusOr<dstrain::coordinator::ValidatedJob> job =
      dstrain::coordinator::ValidateSubmission(request, limits);
  if (NamesDeepSpeedConfig(request.spec_json()) &&
      dstrain::coordinator::IsValidJobId(request.job_id()) &&
      request.spec_json().size() <= limits.max_spec_bytes &&
      (job.ok() || !absl::StartsWith(job.status().message(),
                                     "spec_json: deepspeed_config: "
                                     "a submitted job must be"))) {
    Fail("a spec naming deepspeed_config was not refused as not self-contained", request,
         job.status());
  }
  if (!job.ok()) {
    const absl::StatusCode want = request.spec_json().size() > limits.max_spec_bytes
                                      ? absl::StatusCode::kResourceExhausted
                                      : absl::StatusCode::kInvalidArgument;
    if (job.status().code() != want &&
        !(want == absl::StatusCode::kResourceExhausted &&
          job.status().code() == absl::StatusCode::kInvalidArgument &&
          absl::StartsWith(job.status().message(), "job_id"))) {
      Fail("a submission was refused with another code than its kind of error", request,
           job.status());
    }
    return 0;
  }
  if (!dstrain::coordinator::IsValidJobId(job->job_id) || job->world_size < 1 ||
      job->world_size > limits.max_world_size) {
    Fail("an accepted job has an invalid id or world size", request, job.status());
  }
  if (!dstrain::config::ParseJobSpec(job->spec_json, "").ok()) {
    Fail("an accepted job's effective spec does not parse", request, job.status());
  }
  (void)dstrain::coordinator::KeepLastOf(job->spec_json);
  return 0;
}
