// Bandwidth of the residual kernels: bazel run -c opt //kernels/residual:residual_benchmark
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/residual/residual.h"

namespace dstrain::kernels {
namespace {

void BM_ResidualForward(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> a(n, 1.f), b(n, 2.f), out(n);
  for (auto _ : state) {
    ResidualForward(out.data(), a.data(), b.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 12);  // read a, b; write out
}
// B*T*C of the two target shapes (8*256*256, 4*64*768) and a 64 MiB array.
BENCHMARK(BM_ResidualForward)->Arg(524288)->Arg(196608)->Arg(1 << 24)->UseRealTime();

void BM_AddInPlace(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> y(n, 1.f), x(n, 1e-9f);
  for (auto _ : state) {
    AddInPlace(y.data(), x.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 12);
}
BENCHMARK(BM_AddInPlace)->Arg(1 << 24)->UseRealTime();

void BM_SumSquares(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> x(n, 0.5f);
  for (auto _ : state) benchmark::DoNotOptimize(SumSquares(x.data(), n));
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK(BM_SumSquares)->Arg(1 << 24)->Arg(124475904)->UseRealTime();

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
