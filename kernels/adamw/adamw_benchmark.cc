// AdamW throughput on 100M parameters and on GPT-2 small's 5.3M-parameter test shape:
//   bazel run //kernels/adamw:adamw_benchmark
// Traffic per parameter, 28 bytes either way: fp32 reads p, g, m, v and writes p, m, v (4 bytes
// each); mixed reads the master, a 16-bit gradient, m, v and writes the master, m, v and the
// 16-bit parameter copy (4 + 2 + 4 + 4 + 4 + 4 + 4 + 2).
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

// Args: n, type (0 bf16, 1 fp16).
void BM_AdamWMixed(benchmark::State& state) {
  const int64_t n = state.range(0);
  const DType type = state.range(1) == 0 ? DType::kBF16 : DType::kF16;
  std::vector<float> master(n, 0.1f), m(n, 0.f), v(n, 0.f);
  // 0.01 in the format, so the gradients are ordinary non-zero values.
  std::vector<uint16_t> g16(n, type == DType::kBF16 ? 0x3c24 : 0x211f), p16(n);
  AdamWArgs a;
  a.weight_decay = 0.1f;
  for (auto _ : state) {
    AdamWUpdateMixed(master.data(), g16.data(), m.data(), v.data(), p16.data(), n, a, type);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * n * 28);
}
BENCHMARK(BM_AdamWMixed)
    ->ArgsProduct({{100'000'000, 5'322'240}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
