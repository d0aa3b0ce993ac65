// Throughput of GELU at the MLP activation sizes (B*T*4C) of the two target shapes:
//   bazel run //kernels/gelu:gelu_benchmark
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/gelu/gelu.h"

namespace dstrain::kernels {
namespace {

void BM_GeluForward(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) x[i] = (i % 1000) * 0.01f - 5.f;
  for (auto _ : state) {
    GeluForward(y.data(), x.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 8);
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_GeluForward)->Arg(8 * 256 * 1024)->Arg(4 * 64 * 3072)->UseRealTime();

void BM_GeluBackward(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> x(n), dy(n, 1.f), dx(n);
  for (int64_t i = 0; i < n; ++i) x[i] = (i % 1000) * 0.01f - 5.f;
  for (auto _ : state) {
    GeluBackward(dx.data(), x.data(), dy.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 12);
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_GeluBackward)->Arg(8 * 256 * 1024)->Arg(4 * 64 * 3072)->UseRealTime();

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
