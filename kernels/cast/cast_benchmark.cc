// Bandwidth of the 16-bit conversions at GPT-2 124M's parameter count and a 16M-element array:
//   bazel run //kernels/cast:cast_benchmark
// Bytes are those each call must move: 6 per element for a conversion, 8 for AccumulateIntoHalf
// (read and write 2, read 4), 2 for SumSquaresHalf.
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cast/cast.h"

namespace dstrain::kernels {
namespace {

DType TypeArg(const benchmark::State& state) {
  return state.range(1) == 0 ? DType::kBF16 : DType::kF16;
}

void BM_FloatToHalf(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<float> in(n, 0.3f);
  std::vector<uint16_t> out(n);
  for (auto _ : state) {
    FloatToHalf(TypeArg(state), out.data(), in.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 6);
}

void BM_HalfToFloat(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<uint16_t> in(n, 0x3c00);
  std::vector<float> out(n);
  for (auto _ : state) {
    HalfToFloat(TypeArg(state), out.data(), in.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 6);
}

void BM_AccumulateIntoHalf(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<uint16_t> acc(n, 0x3c00);
  std::vector<float> in(n, 0.f);
  for (auto _ : state) {
    AccumulateIntoHalf(TypeArg(state), acc.data(), in.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 8);
}

void BM_SumSquaresHalf(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<uint16_t> x(n, 0x3c00);
  for (auto _ : state) benchmark::DoNotOptimize(SumSquaresHalf(TypeArg(state), x.data(), n));
  state.SetBytesProcessed(state.iterations() * n * 2);
}

// Args: n, type (0 bf16, 1 fp16).
#define DT_CAST_BENCHMARK(fn) \
  BENCHMARK(fn)->ArgsProduct({{124'475'904, 1 << 24}, {0, 1}})->UseRealTime()

DT_CAST_BENCHMARK(BM_FloatToHalf);
DT_CAST_BENCHMARK(BM_HalfToFloat);
DT_CAST_BENCHMARK(BM_AccumulateIntoHalf);
DT_CAST_BENCHMARK(BM_SumSquaresHalf);

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
