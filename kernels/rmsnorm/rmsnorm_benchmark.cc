// RMSNorm throughput: bazel run //kernels/rmsnorm:rmsnorm_benchmark
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/rmsnorm/rmsnorm.h"

namespace dstrain::kernels {
namespace {

// Args: N = B*T, C. The GPT-2-sized shapes of layernorm_benchmark and a Llama-7B width.
void BM_RmsNormForward(benchmark::State& state) {
  const int64_t N = state.range(0);
  const int C = state.range(1);
  std::vector<float> x(N * C), out(N * C), rstd(N), w(C, 1.f);
  for (int64_t i = 0; i < N * C; ++i) x[i] = (i % 97) * 0.01f;
  for (auto _ : state) {
    RmsNormForward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * N * C * 8);  // read inp, write out
}
BENCHMARK(BM_RmsNormForward)->Args({2048, 256})->Args({256, 768})->Args({256, 4096})->UseRealTime();

void BM_RmsNormBackward(benchmark::State& state) {
  const int64_t N = state.range(0);
  const int C = state.range(1);
  std::vector<float> x(N * C), dout(N * C, 0.01f), dinp(N * C, 0.f), rstd(N, 2.f);
  std::vector<float> w(C, 1.f), dw(C, 0.f);
  for (int64_t i = 0; i < N * C; ++i) x[i] = (i % 97) * 0.01f;
  for (auto _ : state) {
    RmsNormBackward(dinp.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * N * C * 16);  // read inp, dout, dinp; write dinp
}
BENCHMARK(BM_RmsNormBackward)
    ->Args({2048, 256})
    ->Args({256, 768})
    ->Args({256, 4096})
    ->UseRealTime();

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
