// Fused softmax + cross-entropy at the target shapes:
//   bazel run //kernels/crossentropy:crossentropy_benchmark
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/crossentropy/crossentropy.h"

namespace dstrain::kernels {
namespace {

// Args: N = B*T, V, Vp. The logits are refreshed outside the timed region each iteration.
void BM_CrossEntropy(benchmark::State& state) {
  const int64_t N = state.range(0);
  const int V = state.range(1), Vp = state.range(2);
  std::vector<float> init(N * Vp), z(N * Vp), losses(N);
  for (int64_t i = 0; i < N * Vp; ++i) init[i] = (i % 1013) * 0.01f;
  std::vector<int32_t> targets(N);
  for (int64_t i = 0; i < N; ++i) targets[i] = (i * 31) % V;
  for (auto _ : state) {
    state.PauseTiming();
    z = init;
    state.ResumeTiming();
    CrossEntropyForwardBackward(losses.data(), z.data(), targets.data(), N, V, Vp, 1.f / N);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * N * Vp * 8);  // read logits, write dlogits
  state.SetItemsProcessed(state.iterations() * N * V);
}
BENCHMARK(BM_CrossEntropy)->Args({2048, 8192, 8192})->Args({256, 50257, 50304})->UseRealTime();

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
