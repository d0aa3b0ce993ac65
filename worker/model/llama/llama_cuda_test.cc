// The Llama module's forward and backward passes on CudaOps against the same passes on CpuOps,
// from the same weights and batch: the module is written once against device::Ops, so the CUDA
// backend's new operations (RMSNorm, RoPE, GQA, SwiGLU) must give the CPU's loss and gradients up
// to summation order. Built twice, as worker/device's cuda_ops_test: on a GPU (skips without
// one) and on the CUDA simulator.
#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "worker/api/module_model.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/device/cuda/cuda_ops.h"
#include "worker/model/llama/llama.h"
#include "worker/model/param_access.h"

namespace dstrain::llama {
namespace {

using ::dstrain::testing::IsOk;

struct Result {
  float loss = 0;
  std::vector<float> grads;
};

// One training forward and backward of `ops`'s model, with params and grads on its device.
Result PassOn(device::Ops& ops, const LlamaConfig& cfg, const std::vector<float>& params,
              const model::Batch& batch) {
  Result r;
  auto llama = Llama::Create(cfg);
  EXPECT_THAT(llama, IsOk());
  auto m = api::ModuleModel::Create(*std::move(llama), &ops);
  EXPECT_THAT(m, IsOk());
  if (!m.ok()) return r;
  const int64_t n = (*m)->layout().total();
  auto p = tensor::Tensor::Empty(ops.allocator(), DType::kF32, {n}, tensor::MemoryCategory::kOther);
  auto g = tensor::Tensor::Empty(ops.allocator(), DType::kF32, {n}, tensor::MemoryCategory::kOther);
  EXPECT_THAT(p, IsOk());
  EXPECT_THAT(g, IsOk());
  ops.CopyFromHost(p->view(), params.data());
  ops.Fill(g->view(), 0.f);
  model::FlatParamAccess access((*m)->layout(), p->view(), g->view());
  auto loss = (*m)->Forward(access, batch, model::LossGrad{1.0, 1});
  EXPECT_THAT(loss, IsOk());
  EXPECT_THAT((*m)->Backward(access), IsOk());
  r.loss = loss.ok() ? *loss : 0.f;
  r.grads.resize(n);
  ops.CopyToHost(r.grads.data(), g->view());
  EXPECT_THAT(ops.Synchronize(), IsOk());
  return r;
}

// Loss 1e-5 relative; each gradient within 1e-4 of the largest (different summation orders
// through two layers of fp32 sums, ~1e-6 relative each), plus 1e-4 of itself. A wrong kernel
// argument (a stride, a head count, NKV for NH) is off by O(1) of the gradients.
TEST(LlamaCuda, ForwardAndBackwardMatchTheCpu) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto gpu = device::CudaOps::Create({});
  ASSERT_THAT(gpu, IsOk());
  tensor::CpuAllocator alloc;
  device::CpuOps cpu(&alloc);
  LlamaConfig cfg;
  cfg.n_layer = 2;
  cfg.n_embd = 32;
  cfg.n_head = 4;
  cfg.n_kv_head = 2;
  cfg.intermediate_size = 40;
  cfg.vocab_size = 29;
  cfg.block_size = 16;
  cfg.rope_theta = 500.0;
  auto probe = api::ModuleModel::Create(*Llama::Create(cfg), &cpu);
  ASSERT_THAT(probe, IsOk());
  const model::ParamLayout& layout = (*probe)->layout();
  std::vector<float> params(layout.total(), 0.f);
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  for (const model::ParamSpec& p : layout.params()) {
    const bool norm = p.shape.size() == 1;
    for (int64_t i = 0; i < p.numel; ++i) params[p.offset + i] = (norm ? 1.f : 0.f) + u(rng);
  }
  const int B = 2, T = 11;
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (int i = 0; i < B * T; ++i) {
    tokens[i] = static_cast<int32_t>(rng() % cfg.vocab_size);
    targets[i] = static_cast<int32_t>(rng() % cfg.vocab_size);
  }
  model::Batch batch;
  batch.Add("tokens", {DType::kI32, {B, T}, tokens.data()})
      .Add("targets", {DType::kI32, {B, T}, targets.data()});

  const Result want = PassOn(cpu, cfg, params, batch);
  const Result got = PassOn(**gpu, cfg, params, batch);
  EXPECT_NEAR(got.loss, want.loss, 1e-5 * std::abs(want.loss));
  ASSERT_EQ(got.grads.size(), want.grads.size());
  float largest = 0;
  for (float g : want.grads) largest = std::max(largest, std::abs(g));
  ASSERT_GT(largest, 1e-3f);
  int off = 0;
  for (size_t i = 0; i < want.grads.size(); ++i) {
    if (std::abs(got.grads[i] - want.grads[i]) > 1e-4 * largest + 1e-4 * std::abs(want.grads[i])) {
      if (++off <= 10)
        ADD_FAILURE() << "gradient " << i << ": " << got.grads[i] << " vs " << want.grads[i];
    }
  }
  EXPECT_EQ(off, 0);
}

}  // namespace
}  // namespace dstrain::llama
