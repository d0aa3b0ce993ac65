// The steps of ParseJobSpec (config.cc), one per block of the job file, each in the file of its
// block: config_batch.cc (parallelism, the batch triple and DeepSpeed's other top-level keys),
// config_zero.cc (zero_optimization), config_precision.cc (fp16, bf16), config_optimizer.cc
// (optimizer, scheduler) and config_job_blocks.cc (model, data, job). Each reads the normalized
// config `e` (every key present and type-checked), checks the rules that span keys, fills what
// DeepSpeed infers or resolves back into `e`, and sets its part of the JobSpec. Errors are
// kInvalidArgument with the key path first (config.h). This package only.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "worker/config/config.h"
#include "worker/config/schema.h"

namespace dstrain::config::internal {

// kInvalidArgument "<path>: <args...>".
template <typename... Args>
absl::Status Error(absl::string_view path, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", args...));
}

// `p` against `base_dir` ("" leaves it relative), lexically normalized; "" stays "".
std::string ResolvePath(const std::string& base_dir, const std::string& p);

// DeepSpeed's top-level keys.
absl::Status ResolveParallelism(const nlohmann::json& e, JobSpec* spec);
// The pipeline block with job.pipeline_stages, after the model, data and job blocks: the
// partition is computed once here so that a bad one fails validation (config_pipeline.cc).
absl::Status ResolvePipeline(const nlohmann::json& e, JobSpec* spec);
absl::Status ResolveBatch(nlohmann::json* e, int64_t dp, JobSpec* spec);
// gradient_clipping, the gradient reduction keys, data_types.grad_accum_dtype and steps_per_print;
// after FillPrecision (the communication data type defaults to the training precision, and a
// 16-bit accumulation type must be it).
absl::Status ResolveGradientKeys(nlohmann::json* effective, const NormalizeContext& ctx,
                                 std::vector<std::string>* notes, JobSpec* spec);

// checkpoint.tag_validation, in any case; written back in DeepSpeed's spelling.
absl::Status ResolveCheckpoint(nlohmann::json* e, CheckpointConfig* out);
// zero_optimization.offload_optimizer and aio (config_offload.cc); after ResolveZero.
absl::Status ResolveOffload(nlohmann::json* e, const std::string& base_dir, JobSpec* spec);

absl::Status ResolveZero(nlohmann::json* e, const NormalizeContext& ctx,
                         std::vector<std::string>* notes, ZeroConfig* out);

// fp16 and bf16.
void FillPrecision(nlohmann::json* effective, const NormalizeContext& ctx,
                   std::vector<std::string>* notes, JobSpec* spec);

absl::Status ResolveOptimizer(nlohmann::json* e, NormalizeContext* ctx,
                              std::vector<std::string>* notes, OptimizerConfig* out);
// scheduler.params for `type`: DeepSpeed's defaults filled, cross-field rules checked.
absl::StatusOr<nlohmann::json> ResolveSchedulerParams(const std::string& type,
                                                      const nlohmann::json& params_in,
                                                      NormalizeContext* ctx);
absl::Status ResolveScheduler(nlohmann::json* e, NormalizeContext* ctx,
                              std::vector<std::string>* notes, SchedulerConfig* out);

// dstrain's own blocks; paths resolved against `base_dir`.
absl::Status ResolveModel(nlohmann::json* e, const std::string& base_dir, ModelConfig* out);
absl::Status ResolveData(nlohmann::json* e, const std::string& base_dir, const ModelConfig& model,
                         DataConfig* out);
absl::Status ResolveJob(nlohmann::json* e, const std::string& base_dir,
                        const std::string& default_name, JobConfig* out);

}  // namespace dstrain::config::internal
