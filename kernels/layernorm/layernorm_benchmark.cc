// LayerNorm throughput at the target shapes: bazel run //kernels/layernorm:layernorm_benchmark
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/layernorm/layernorm.h"

namespace dstrain::kernels {
namespace {

// Args: N = B*T, C.
void BM_LayerNormForward(benchmark::State& state) {
  const int64_t N = state.range(0);
  const int C = state.range(1);
  std::vector<float> x(N * C), out(N * C), mean(N), rstd(N), w(C, 1.f), b(C, 0.f);
  for (int64_t i = 0; i < N * C; ++i) x[i] = (i % 97) * 0.01f;
  for (auto _ : state) {
    LayerNormForward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * N * C * 8);  // read inp, write out
}
BENCHMARK(BM_LayerNormForward)->Args({2048, 256})->Args({256, 768})->UseRealTime();

void BM_LayerNormBackward(benchmark::State& state) {
  const int64_t N = state.range(0);
  const int C = state.range(1);
  std::vector<float> x(N * C), dout(N * C, 0.01f), dinp(N * C, 0.f), mean(N, 0.5f), rstd(N, 2.f);
  std::vector<float> w(C, 1.f), dw(C, 0.f), db(C, 0.f);
  for (int64_t i = 0; i < N * C; ++i) x[i] = (i % 97) * 0.01f;
  for (auto _ : state) {
    LayerNormBackward(dinp.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(),
                      mean.data(), rstd.data(), N, C);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * N * C * 16);  // read inp, dout, dinp; write dinp
}
BENCHMARK(BM_LayerNormBackward)->Args({2048, 256})->Args({256, 768})->UseRealTime();

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
