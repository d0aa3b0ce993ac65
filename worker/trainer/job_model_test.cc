// model.type's one switch: the Llama built from a job file, its layout, estimate, weight files
// under Hugging Face's names and the manifest's record of the model.
#include "worker/trainer/job_model.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/model/safetensors.h"
#include "worker/zero/estimate.h"

namespace dstrain::trainer {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

config::JobSpec LlamaJob() {
  auto spec = config::ParseJobSpec(R"({
    "train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": true},
    "zero_optimization": {"stage": 3},
    "model": {"type": "llama", "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32,
              "intermediate_size": 48, "vocab_size": 40, "block_size": 16, "rope_theta": 500.0},
    "data": {"train": "train_*.bin", "seq_len": 8},
    "job": {"train_steps": 3, "world_size": 2}})",
                                   "");
  EXPECT_THAT(spec, IsOk());
  return *spec;
}

std::string Tmp(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
}

TEST(JobModel, BuildsTheLlamaOfTheModelBlock) {
  const config::JobSpec spec = LlamaJob();
  const llama::LlamaConfig c = LlamaShape(spec.model);
  EXPECT_EQ(c.n_layer, 2);
  EXPECT_EQ(c.n_kv_head, 2);
  EXPECT_EQ(c.intermediate_size, 48);
  EXPECT_EQ(c.rope_theta, 500.0);
  EXPECT_EQ(c.norm_eps, 1e-6);
  EXPECT_EQ(c.vocab_size, 40);
  tensor::CpuAllocator alloc;
  device::CpuOps ops(&alloc);
  auto model = BuildJobModel(spec, &ops);
  ASSERT_THAT(model, IsOk());
  auto layout = JobModelLayout(spec);
  ASSERT_THAT(layout, IsOk());
  EXPECT_EQ((*model)->layout().num_parameters(), layout->num_parameters());
  // embed + head (V·C each), per layer qkv (4 + 2·2)·8·C, o C², gate_up 2·I·C, down I·C, 2 norms;
  // the final norm.
  const int64_t C = 32, V = 40, I = 48;
  EXPECT_EQ(layout->num_parameters(),
            2 * V * C + 2 * ((4 + 2 * 2) * 8 * C + C * C + 3 * I * C + 2 * C) + C);
}

TEST(JobModel, EstimatesTheLlamaFromItsLayoutAndActivations) {
  const config::JobSpec spec = LlamaJob();
  tensor::CpuAllocator alloc;
  device::CpuOps ops(&alloc);
  auto stages = EstimateJobStages(spec, ops);
  ASSERT_THAT(stages, IsOk());
  ASSERT_EQ(stages->size(), 1u);
  const zero::MemoryEstimate& e = (*stages)[0].memory;
  llama::Llama module(LlamaShape(spec.model));
  // A bf16 job: the activations only the products read are kept in bf16 on the CPU.
  EXPECT_EQ(e.activations, module.ActivationBytes(ops, 2, 8, DType::kBF16));
  EXPECT_LT(e.activations, module.ActivationBytes(ops, 2, 8, DType::kF32));
  auto layout = JobModelLayout(spec);
  ASSERT_THAT(layout, IsOk());
  EXPECT_EQ((*stages)[0].partition.parameters, layout->num_parameters());
  // bf16 at stage 3 on 2 ranks: 2-byte parameters and gradients, 12 bytes of fp32 state, each a
  // half of the (padded) model.
  EXPECT_NEAR(static_cast<double>(e.model_states()), 16.0 * layout->num_parameters() / 2,
              0.05 * 16.0 * layout->num_parameters() / 2);
}

TEST(JobModel, WritesTheLlamaUnderHuggingFaceNames) {
  const config::JobSpec spec = LlamaJob();
  auto layout = JobModelLayout(spec);
  ASSERT_THAT(layout, IsOk());
  std::vector<float> params(layout->total());
  for (size_t i = 0; i < params.size(); ++i) params[i] = 0.001f * static_cast<float>(i);
  EXPECT_THAT(WriteModelFile(Tmp("llama.bin"), spec.model, *layout, params.data()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("safetensors")));
  const std::string path = Tmp("llama.safetensors");
  ASSERT_THAT(WriteModelFile(path, spec.model, *layout, params.data()), IsOk());
  auto file = model::ReadSafetensors(path);
  ASSERT_THAT(file, IsOk());
  EXPECT_EQ(file->metadata.at("format"), "pt");
  const std::vector<llama::HfTensor> hf = llama::HfTensors(LlamaShape(spec.model));
  ASSERT_EQ(file->order.size(), hf.size());
  for (size_t i = 0; i < hf.size(); ++i) {
    SCOPED_TRACE(hf[i].hf_name);
    EXPECT_EQ(file->order[i], hf[i].hf_name);
    const model::ParamSpec* p = layout->Find(hf[i].param);
    ASSERT_NE(p, nullptr);
    const int64_t cols = p->shape.size() == 2 ? p->shape[1] : 1;
    const auto& t = file->tensors.at(hf[i].hf_name);
    const int64_t begin = p->offset + hf[i].row_begin * cols;
    const int64_t end = p->offset + hf[i].row_end * cols;
    EXPECT_EQ(t.data, std::vector<float>(params.begin() + begin, params.begin() + end));
  }
  // Hugging Face's shapes: k and v projections have n_kv_head · head_dim rows.
  EXPECT_EQ(file->tensors.at("model.layers.1.self_attn.q_proj.weight").shape,
            (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(file->tensors.at("model.layers.1.self_attn.k_proj.weight").shape,
            (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(file->tensors.at("model.layers.0.mlp.down_proj.weight").shape,
            (std::vector<int64_t>{32, 48}));
  EXPECT_EQ(file->tensors.at("model.norm.weight").shape, (std::vector<int64_t>{32}));
  EXPECT_EQ(file->tensors.at("lm_head.weight").shape, (std::vector<int64_t>{40, 32}));
}

TEST(JobModel, TheManifestsRecordGivesTheModelBack) {
  const config::JobSpec spec = LlamaJob();
  auto back = ModelFromMeta(ModelMeta(spec));
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->type, "llama");
  EXPECT_EQ(back->n_kv_head, 2);
  EXPECT_EQ(back->intermediate_size, 48);
  EXPECT_EQ(back->rope_theta, 500.0);
  EXPECT_EQ(back->norm_eps, 1e-6);
  nlohmann::json damaged = ModelMeta(spec);
  damaged.erase("n_kv_head");
  EXPECT_THAT(ModelFromMeta(damaged),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("meta.job_model.n_kv_head")));
  EXPECT_THAT(ModelFromMeta(nlohmann::json::array()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("type")));
}

}  // namespace
}  // namespace dstrain::trainer
