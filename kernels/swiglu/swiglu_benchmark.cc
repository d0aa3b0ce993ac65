// SwiGLU throughput: bazel run //kernels/swiglu:swiglu_benchmark
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/swiglu/swiglu.h"

namespace dstrain::kernels {
namespace {

// Args: N = B*T, I (intermediate size; the input rows are 2I wide).
void BM_SwiGluForward(benchmark::State& state) {
  const int64_t N = state.range(0);
  const int I = state.range(1);
  std::vector<float> inp(2 * N * I), out(N * I);
  for (int64_t i = 0; i < 2 * N * I; ++i) inp[i] = (i % 97) * 0.1f - 4.f;
  for (auto _ : state) {
    SwiGluForward(out.data(), inp.data(), N, I);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * N * I * 12);  // read gate, up; write out
}
BENCHMARK(BM_SwiGluForward)->Args({256, 2048})->Args({256, 11008})->UseRealTime();

void BM_SwiGluBackward(benchmark::State& state) {
  const int64_t N = state.range(0);
  const int I = state.range(1);
  std::vector<float> inp(2 * N * I), dout(N * I, 0.01f), dinp(2 * N * I);
  for (int64_t i = 0; i < 2 * N * I; ++i) inp[i] = (i % 97) * 0.1f - 4.f;
  for (auto _ : state) {
    SwiGluBackward(dinp.data(), inp.data(), dout.data(), N, I);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * N * I * 20);  // read gate, up, dout; write 2 grads
}
BENCHMARK(BM_SwiGluBackward)->Args({256, 2048})->Args({256, 11008})->UseRealTime();

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
