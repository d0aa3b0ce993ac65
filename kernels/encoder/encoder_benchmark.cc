// Encoder throughput at the two target shapes: bazel run //kernels/encoder:encoder_benchmark
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/encoder/encoder.h"

namespace dstrain::kernels {
namespace {

// Args: B, T, C, Vp.
void BM_EncoderForward(benchmark::State& state) {
  const int B = state.range(0), T = state.range(1), C = state.range(2), Vp = state.range(3);
  std::vector<int32_t> tokens(B * T);
  for (int i = 0; i < B * T; ++i) tokens[i] = (i * 7919) % Vp;
  std::vector<float> wte(int64_t{Vp} * C, 0.01f), wpe(int64_t{T} * C, 0.02f),
      out(int64_t{B} * T * C);
  for (auto _ : state) {
    EncoderForward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * int64_t{B} * T * C * 12);
}
BENCHMARK(BM_EncoderForward)->Args({8, 256, 256, 8192})->Args({4, 64, 768, 50304})->UseRealTime();

void BM_EncoderBackward(benchmark::State& state) {
  const int B = state.range(0), T = state.range(1), C = state.range(2), Vp = state.range(3);
  std::vector<int32_t> tokens(B * T);
  for (int i = 0; i < B * T; ++i) tokens[i] = (i * 7919) % Vp;
  std::vector<float> dwte(int64_t{Vp} * C, 0.f), dwpe(int64_t{T} * C, 0.f);
  std::vector<float> dout(int64_t{B} * T * C, 1e-3f);
  for (auto _ : state) {
    EncoderBackward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
    benchmark::ClobberMemory();
  }
  // Reads dout, reads and writes one dwte row and one dwpe row per token.
  state.SetBytesProcessed(state.iterations() * int64_t{B} * T * C * 20);
}
BENCHMARK(BM_EncoderBackward)->Args({8, 256, 256, 8192})->Args({4, 64, 768, 50304})->UseRealTime();

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
