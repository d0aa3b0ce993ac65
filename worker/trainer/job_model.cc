#include "worker/trainer/job_model.h"

#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/api/module_model.h"
#include "worker/env/env.h"
#include "worker/model/gpt.h"
#include "worker/model/llmc_format.h"
#include "worker/model/safetensors.h"
#include "worker/zero/estimate.h"
#include "worker/zero/precision.h"

namespace dstrain::trainer {

llama::LlamaConfig LlamaShape(const config::ModelConfig& m) {
  llama::LlamaConfig c;
  c.n_layer = m.n_layer;
  c.n_embd = m.n_embd;
  c.n_head = m.n_head;
  c.n_kv_head = m.n_kv_head;
  c.intermediate_size = m.intermediate_size;
  c.rope_theta = m.rope_theta;
  c.norm_eps = m.norm_eps;
  c.vocab_size = m.vocab_size;
  c.block_size = m.block_size;
  return c;
}

absl::StatusOr<std::unique_ptr<model::Model>> BuildJobModel(const config::JobSpec& spec,
                                                            device::Ops* ops,
                                                            model::BlockRange blocks,
                                                            const model::ActivationPlan& plan) {
  if (spec.model.type == "llama") {
    DT_ASSIGN_OR_RETURN(std::unique_ptr<llama::Llama> module,
                        llama::Llama::Create(LlamaShape(spec.model)));
    DT_ASSIGN_OR_RETURN(std::unique_ptr<api::ModuleModel> model,
                        api::ModuleModel::Create(std::move(module), ops));
    return std::unique_ptr<model::Model>(std::move(model));
  }
  DT_ASSIGN_OR_RETURN(std::unique_ptr<model::Gpt> gpt,
                      model::Gpt::Create(config::ModelShape(spec.model), ops, blocks));
  gpt->set_activation_plan(plan);
  return std::unique_ptr<model::Model>(std::move(gpt));
}

absl::StatusOr<model::ParamLayout> JobModelLayout(const config::JobSpec& spec) {
  if (spec.model.type == "llama") {
    llama::Llama module(LlamaShape(spec.model));
    return api::ModuleModel::DeclaredLayout(module);
  }
  return model::ParamLayout::ForGpt(config::ModelShape(spec.model));
}

absl::StatusOr<int64_t> JobActivationBytes(const config::JobSpec& spec, const device::Sizing& ops,
                                           const model::ActivationPlan& plan) {
  const int B = static_cast<int>(spec.train_micro_batch_size_per_gpu), T = spec.data.seq_len;
  if (spec.model.type == "llama") {
    DT_ASSIGN_OR_RETURN(std::unique_ptr<llama::Llama> module,
                        llama::Llama::Create(LlamaShape(spec.model)));
    return module->ActivationBytes(ops, B, T, zero::StatePrecision::Of(spec).Matmul());
  }
  return zero::GptActivationBytes(config::ModelShape(spec.model), B, T, ops, {}, plan,
                                  zero::StatePrecision::Of(spec).Matmul());
}

absl::StatusOr<std::vector<pipe::StageEstimate>> EstimateJobStages(const config::JobSpec& spec,
                                                                   const device::Sizing& ops) {
  if (spec.model.type != "llama") return pipe::EstimateStages(spec, ops);
  DT_ASSIGN_OR_RETURN(const model::ParamLayout layout, JobModelLayout(spec));
  DT_ASSIGN_OR_RETURN(const int64_t activations, JobActivationBytes(spec, ops));
  pipe::StageEstimate e;
  e.partition = {model::BlockRange{}, spec.model.n_layer, layout.num_parameters()};
  e.memory = zero::EstimateMemory(layout, activations, spec.zero, spec.zero.stage,
                                  spec.data_parallel_size, ops, zero::StatePrecision::Of(spec));
  e.activations_plain = activations;
  e.activations_checkpointed = activations;  // the Llama checkpoints no activations
  return std::vector<pipe::StageEstimate>{e};
}

nlohmann::json ModelMeta(const config::JobSpec& spec) { return spec.effective["model"]; }

absl::StatusOr<config::ModelConfig> ModelFromMeta(const nlohmann::json& m) {
  config::ModelConfig c;
  const auto get_int = [&](const char* key, int* out) -> absl::Status {
    if (!m.is_object() || !m.contains(key) || !m[key].is_number_integer()) {
      return absl::DataLossError(absl::StrCat("meta.job_model.", key, ": missing"));
    }
    *out = m[key].get<int>();
    return absl::OkStatus();
  };
  if (!m.is_object() || !m.contains("type") || !m["type"].is_string()) {
    return absl::DataLossError("meta.job_model.type: missing");
  }
  c.type = m["type"].get<std::string>();
  DT_RETURN_IF_ERROR(get_int("n_layer", &c.n_layer));
  DT_RETURN_IF_ERROR(get_int("n_head", &c.n_head));
  DT_RETURN_IF_ERROR(get_int("n_embd", &c.n_embd));
  DT_RETURN_IF_ERROR(get_int("vocab_size", &c.vocab_size));
  DT_RETURN_IF_ERROR(get_int("block_size", &c.block_size));
  DT_RETURN_IF_ERROR(get_int("padded_vocab_size", &c.padded_vocab_size));
  if (c.type == "llama") {
    DT_RETURN_IF_ERROR(get_int("n_kv_head", &c.n_kv_head));
    DT_RETURN_IF_ERROR(get_int("intermediate_size", &c.intermediate_size));
    for (auto [key, out] : {std::pair<const char*, double*>{"rope_theta", &c.rope_theta},
                            {"norm_eps", &c.norm_eps}}) {
      if (!m.contains(key) || !m[key].is_number()) {
        return absl::DataLossError(absl::StrCat("meta.job_model.", key, ": missing"));
      }
      *out = m[key].get<double>();
    }
  }
  return c;
}

absl::Status WriteModelFile(const std::string& path, const config::ModelConfig& spec_model,
                            const model::ParamLayout& layout, const float* params) {
  const bool safetensors = absl::EndsWith(path, ".safetensors");
  if (spec_model.type != "llama") {
    if (!safetensors) {
      return model::WriteLlmcModel(path, config::ModelShape(spec_model), layout, params);
    }
    std::string header;
    DT_ASSIGN_OR_RETURN(
        const std::vector<absl::string_view> pieces,
        model::SafetensorsPieces(model::LayoutTensors(layout, params),
                                 {{"format", "dstrain"}, {"model", "gpt"}}, &header));
    return env::WriteFileAtomically(env::PosixEnv::Default(), path, pieces);
  }
  if (!safetensors) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": the Llama's weights are written as safetensors (name the file "
                     "*.safetensors); llm.c's format holds the GPT only"));
  }
  // Each Hugging Face tensor is a contiguous run of rows of one parameter (llama.h, HfTensors).
  std::vector<model::SafetensorsTensor> tensors;
  for (const llama::HfTensor& t : llama::HfTensors(LlamaShape(spec_model))) {
    const model::ParamSpec* p = layout.Find(t.param);
    if (p == nullptr) {
      return absl::InternalError(absl::StrCat("the Llama's layout lacks ", t.param));
    }
    const int64_t cols = p->shape.size() == 2 ? p->shape[1] : 1;
    std::vector<int64_t> shape = {t.row_end - t.row_begin};
    if (p->shape.size() == 2) shape.push_back(cols);
    tensors.push_back({t.hf_name, std::move(shape), params + p->offset + t.row_begin * cols});
  }
  std::string header;
  DT_ASSIGN_OR_RETURN(const std::vector<absl::string_view> pieces,
                      model::SafetensorsPieces(tensors, {{"format", "pt"}}, &header));
  return env::WriteFileAtomically(env::PosixEnv::Default(), path, pieces);
}

}  // namespace dstrain::trainer
