// Pipeline parallelism's keys (docs/job-file.md, "Pipeline parallelism"): job.pipeline_stages
// with the pipeline block, checked against the model and the rest of the job before any rank
// starts.
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/config/resolve.h"
#include "worker/model/gpt_sizes.h"
#include "worker/pipe/layer_partition.h"

namespace dstrain::config::internal {

using nlohmann::json;

absl::Status ResolvePipeline(const json& e, JobSpec* spec) {
  PipelineConfig& p = spec->pipeline;
  p.stages = spec->job.pipeline_stages;
  const json& block = e["pipeline"];
  // DeepSpeed's config default "best" (which its PipelineModule ignores, taking its own
  // partition_method default "parameters") means "parameters" here.
  const std::string method = block["partition"].get<std::string>();
  p.partition_method = method == "best" ? "parameters" : method;
  p.activation_checkpoint_interval = block["activation_checkpoint_interval"].get<int>();
  const json& checkpointing = e["activation_checkpointing"];
  p.synchronize_checkpoint_boundary = checkpointing["synchronize_checkpoint_boundary"].get<bool>();
  p.profile_checkpoints = checkpointing["profile"].get<bool>();
  p.cpu_checkpointing = checkpointing["cpu_checkpointing"].get<bool>();
  if (p.cpu_checkpointing && spec->job.device == JobDevice::kCuda) {
    return Error("activation_checkpointing.cpu_checkpointing",
                 "keeping activation checkpoints in host memory is not supported on CUDA devices "
                 "yet (job.device is \"cuda\")");
  }
  if (spec->model.type == "llama") {
    // What the GPT alone has (docs/job-file.md, "Llama").
    if (p.stages > 1) {
      return Error("job.pipeline_stages", "pipeline parallelism runs the GPT only (model.type \"",
                   spec->model.type, "\")");
    }
    if (p.activation_checkpoint_interval > 0 || p.cpu_checkpointing) {
      return Error(p.cpu_checkpointing ? "activation_checkpointing.cpu_checkpointing"
                                       : "pipeline.activation_checkpoint_interval",
                   "activation checkpointing runs for the GPT only (model.type \"llama\")");
    }
    if (spec->job.sample_every > 0 || spec->job.sample_tokens > 0) {
      return Error(spec->job.sample_every > 0 ? "job.sample_every" : "job.sample_tokens",
                   "sampling runs for the GPT only (model.type \"llama\")");
    }
  }
  if (p.stages == 1) return absl::OkStatus();
  if (spec->zero.stage >= 2) {
    return Error("zero_optimization.stage", spec->zero.stage,
                 " with pipeline parallelism (job.pipeline_stages ", p.stages,
                 "): pipelines run with ZeRO stage 0 or 1, as DeepSpeed's pipeline engine does");
  }
  const model::GptConfig shape = ModelShape(spec->model);
  absl::StatusOr<std::vector<pipe::StagePartition>> cut =
      pipe::PartitionLayers(shape, p.stages, p.partition_method);
  if (!cut.ok()) return cut.status();
  return absl::OkStatus();
}

}  // namespace dstrain::config::internal
