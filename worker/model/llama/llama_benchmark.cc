// Tokens per second of the Llama module's training forward + backward on the CPU (CpuOps), for a
// small Llama (4 layers, C 256, 8 query heads over 2 kv heads, MLP 688, vocabulary 2048), batch
// 4 × 128. Parameters and gradients in one flat buffer (no engine, no optimizer): the module's own
// cost. Usage: bazel run -c opt //worker/model/llama:llama_benchmark [-- ITERATIONS]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

#include "worker/api/module_model.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/model/llama/llama.h"
#include "worker/model/param_access.h"

int main(int argc, char** argv) {
  using namespace dstrain;  // NOLINT: a benchmark's main
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 5;
  llama::LlamaConfig cfg;
  cfg.n_layer = 4;
  cfg.n_embd = 256;
  cfg.n_head = 8;
  cfg.n_kv_head = 2;
  cfg.intermediate_size = 688;
  cfg.vocab_size = 2048;
  cfg.block_size = 128;
  const int B = 4, T = 128;
  tensor::CpuAllocator alloc;
  device::CpuOps ops(&alloc);
  auto made = llama::Llama::Create(cfg);
  if (!made.ok()) return std::printf("%s\n", made.status().ToString().c_str()), 1;
  auto m = api::ModuleModel::Create(*std::move(made), &ops);
  if (!m.ok()) return std::printf("%s\n", m.status().ToString().c_str()), 1;
  const int64_t n = (*m)->layout().total();
  std::vector<float> params(n), grads(n, 0.f);
  (*m)->InitParams(params.data(), 1);
  model::FlatParamAccess access((*m)->layout(), tensor::View::Flat(params.data(), DType::kF32, n),
                                tensor::View::Flat(grads.data(), DType::kF32, n));
  std::vector<int32_t> tokens(B * T), targets(B * T);
  std::mt19937 rng(1);
  for (int i = 0; i < B * T; ++i)
    tokens[i] = rng() % cfg.vocab_size, targets[i] = rng() % cfg.vocab_size;
  model::Batch batch;
  batch.Add("tokens", {DType::kI32, {B, T}, tokens.data()})
      .Add("targets", {DType::kI32, {B, T}, targets.data()});
  double best = 1e30;
  for (int it = 0; it <= iterations; ++it) {  // the first is a warm-up
    const auto start = std::chrono::steady_clock::now();
    auto loss = (*m)->Forward(access, batch, model::LossGrad{1.0, 1});
    const absl::Status s = loss.ok() ? (*m)->Backward(access) : loss.status();
    if (!s.ok()) return std::printf("%s\n", s.ToString().c_str()), 1;
    const double sec =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (it > 0 && sec < best) best = sec;
  }
  std::printf("%s: %lld parameters, B %d T %d: best forward+backward %.1f ms, %.0f tokens/s\n",
              ops.Describe().c_str(), static_cast<long long>((*m)->layout().num_parameters()), B, T,
              best * 1e3, B * T / best);
  return 0;
}
