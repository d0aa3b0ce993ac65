// The model a job file's `model` block names, and its weights as files: the one place the
// trainer turns model.type into a model (docs/job-file.md, "model").
//
//   "gpt"    model::Gpt (llm.c's GPT-2), the slice of a pipeline stage's blocks
//   "llama"  the Llama decoder (worker/model/llama) on the library's dstrain::Module, through
//            api::ModuleModel: the same path a user's own module takes
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"
#include "worker/config/config.h"
#include "worker/device/ops.h"
#include "worker/model/llama/llama.h"
#include "worker/model/model.h"
#include "worker/model/param_layout.h"
#include "worker/pipe/stage_estimate.h"

namespace dstrain::trainer {

// The Llama decoder's shape from a model block of type "llama".
llama::LlamaConfig LlamaShape(const config::ModelConfig& model);

// The model of `spec` on `ops` (not owned; outlives the model). The GPT holds `blocks` (a
// pipeline stage's; all by default) and keeps its activations as `plan` says; the Llama takes
// neither (config refuses pipelines and activation checkpointing for it).
absl::StatusOr<std::unique_ptr<model::Model>> BuildJobModel(const config::JobSpec& spec,
                                                            device::Ops* ops,
                                                            model::BlockRange blocks = {},
                                                            const model::ActivationPlan& plan = {});

// The whole model's layout (the GPT's size table, or the Llama's declarations).
absl::StatusOr<model::ParamLayout> JobModelLayout(const config::JobSpec& spec);

// Bytes of activation memory a training micro-batch of the job takes on `ops`'s device: the
// GPT's as `plan` keeps them (zero::GptActivationBytes), the Llama's (llama::Llama::
// ActivationBytes).
absl::StatusOr<int64_t> JobActivationBytes(const config::JobSpec& spec, const device::Sizing& ops,
                                           const model::ActivationPlan& plan = {});

// pipe::EstimateStages for any model type: the GPT's per pipeline stage; the Llama's as one
// stage holding every layer, without checkpointing.
absl::StatusOr<std::vector<pipe::StageEstimate>> EstimateJobStages(const config::JobSpec& spec,
                                                                   const device::Sizing& ops);

// Writes the whole model's fp32 weights (`params`, `layout`'s order) to `path` atomically: the
// GPT in llm.c's format, or as safetensors when `path` ends in .safetensors; the Llama only as
// safetensors, under Hugging Face's LlamaForCausalLM tensor names (llama::HfTensors), so that
// Hugging Face's tools open it. kInvalidArgument naming `path` for a format the model has not.
absl::Status WriteModelFile(const std::string& path, const config::ModelConfig& model,
                            const model::ParamLayout& layout, const float* params);

// What the trainer records in each checkpoint's manifest (meta.job_model): the effective model
// block, so that `dstrain export` knows the model type and shape (e.g. the Llama's Hugging Face
// names) without the job file.
nlohmann::json ModelMeta(const config::JobSpec& spec);
// The model block back from ModelMeta's record; kDataLoss naming the field when one is missing or
// of the wrong type.
absl::StatusOr<config::ModelConfig> ModelFromMeta(const nlohmann::json& job_model);

}  // namespace dstrain::trainer
