// RoPE throughput: bazel run //kernels/rope:rope_benchmark
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/rope/rope.h"

namespace dstrain::kernels {
namespace {

// Args: B, T, NH, NKV, D. q and k rotated in place inside a fused (B, T, (NH + 2·NKV)·D) qkv
// buffer by one call, as the Llama block does.
void BM_RopeForwardInPlace(benchmark::State& state) {
  const int B = state.range(0), T = state.range(1), NH = state.range(2), NKV = state.range(3),
            D = state.range(4);
  const int64_t stride = int64_t{NH + 2 * NKV} * D;
  std::vector<float> qkv(B * T * stride), table(RopeTableFloats(T, D));
  RopeTable(table.data(), T, D, 10000.0);
  for (int64_t i = 0; i < static_cast<int64_t>(qkv.size()); ++i) qkv[i] = (i % 97) * 0.01f;
  for (auto _ : state) {
    RopeForward(qkv.data(), stride, qkv.data(), stride, table.data(), T, B, T, NH + NKV, D, 0);
    benchmark::ClobberMemory();
  }
  // Read and write q and k.
  state.SetBytesProcessed(state.iterations() * int64_t{B} * T * (NH + NKV) * D * 8);
}
BENCHMARK(BM_RopeForwardInPlace)
    ->Args({4, 1024, 12, 12, 64})
    ->Args({1, 2048, 32, 8, 128})
    ->UseRealTime();

void BM_RopeTable(benchmark::State& state) {
  const int T = state.range(0), D = state.range(1);
  std::vector<float> table(RopeTableFloats(T, D));
  for (auto _ : state) {
    RopeTable(table.data(), T, D, 10000.0);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_RopeTable)->Args({4096, 128});

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
