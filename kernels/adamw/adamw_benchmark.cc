// AdamW throughput on 100M parameters (28 bytes each of traffic):
//   bazel run //kernels/adamw:adamw_benchmark
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/adamw/adamw.h"

namespace dstrain::kernels {
namespace {

void BM_AdamW(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> p(n, 0.1f), g(n, 0.01f), m(n, 0.f), v(n, 0.f);
  AdamWArgs a;
  a.weight_decay = 0.1f;
  for (auto _ : state) {
    AdamWUpdate(p.data(), g.data(), m.data(), v.data(), n, a);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);  // items/s = params/s
  state.SetBytesProcessed(state.iterations() * n * 28);
}
BENCHMARK(BM_AdamW)->Arg(100'000'000)->Arg(5'322'240)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
