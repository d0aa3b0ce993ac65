// Attention throughput at the two target shapes: bazel run //kernels/attention:attention_benchmark
//
// Counters: GFLOP/s counting the full T×T square (forward 4·B·NH·T²·hs: QKᵀ and PV; backward
// twice that), the convention of the project's reports; the causal kernels do about half of those
// flops, so the achieved arithmetic rate is ~half the number shown.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/attention_bf16.h"
#include "kernels/common/cpu_features.h"

namespace dstrain::kernels {
namespace {

struct Data {
  int B, T, C, NH;
  std::vector<float> qkv, out, att, dout, dqkv, scratch;
  std::vector<uint16_t> out16;
  Data(int b, int t, int c, int nh) : B(b), T(t), C(c), NH(nh) {
    qkv.resize(int64_t{B} * T * 3 * C);
    for (size_t i = 0; i < qkv.size(); ++i) qkv[i] = ((i * 2654435761u) % 2001) * 1e-3f - 1.f;
    out.resize(int64_t{B} * T * C);
    dout.assign(out.size(), 1e-2f);
    att.resize(AttentionStateFloats(B, T, NH));
    dqkv.resize(qkv.size());
    scratch.resize(std::max(AttentionBackwardScratchFloats(B, T, C, NH),
                            AttentionBackwardBf16ScratchFloats(B, T, C, NH)));
    out16.resize(out.size());
  }
  double SquareFlops() const { return 4.0 * B * NH * double(T) * T * (C / NH); }
};

// Args: B, T, C, NH.
void BM_AttentionForward(benchmark::State& state) {
  Data d(state.range(0), state.range(1), state.range(2), state.range(3));
  for (auto _ : state) {
    AttentionForward(d.out.data(), d.att.data(), d.qkv.data(), d.B, d.T, d.C, d.NH);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(d.SquareFlops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionForward)->Args({8, 256, 256, 4})->Args({4, 64, 768, 12})->UseRealTime();

void BM_AttentionBackward(benchmark::State& state) {
  Data d(state.range(0), state.range(1), state.range(2), state.range(3));
  AttentionForward(d.out.data(), d.att.data(), d.qkv.data(), d.B, d.T, d.C, d.NH);
  for (auto _ : state) {
    AttentionBackward(d.dqkv.data(), d.scratch.data(), d.dout.data(), d.qkv.data(), d.att.data(),
                      d.B, d.T, d.C, d.NH);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2 * d.SquareFlops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionBackward)->Args({8, 256, 256, 4})->Args({4, 64, 768, 12})->UseRealTime();

// The bf16 products of attention_bf16.h, on AMX tiles (skipped where AMX is not usable).
void BM_AttentionBf16Forward(benchmark::State& state) {
  if (!AmxUsable()) return state.SkipWithError("no usable AMX");
  Data d(state.range(0), state.range(1), state.range(2), state.range(3));
  for (auto _ : state) {
    AttentionForwardBf16(d.out16.data(), d.att.data(), d.qkv.data(), d.B, d.T, d.C, d.NH,
                         TileRoute::kAmx);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(d.SquareFlops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionBf16Forward)->Args({8, 256, 256, 4})->Args({4, 64, 768, 12})->UseRealTime();

void BM_AttentionBf16Backward(benchmark::State& state) {
  if (!AmxUsable()) return state.SkipWithError("no usable AMX");
  Data d(state.range(0), state.range(1), state.range(2), state.range(3));
  AttentionForwardBf16(d.out16.data(), d.att.data(), d.qkv.data(), d.B, d.T, d.C, d.NH,
                       TileRoute::kAmx);
  for (auto _ : state) {
    AttentionBackwardBf16(d.dqkv.data(), d.scratch.data(), d.dout.data(), d.qkv.data(),
                          d.att.data(), d.B, d.T, d.C, d.NH, TileRoute::kAmx);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2 * d.SquareFlops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionBf16Backward)->Args({8, 256, 256, 4})->Args({4, 64, 768, 12})->UseRealTime();

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
