// GQA throughput, and what the thin layer costs: bazel run //kernels/gqa:gqa_benchmark
//
// BM_Gqa* run GqaForward / GqaBackward (expansion + kernels/attention + group sums);
// BM_AttentionSameShape* run kernels/attention alone on an already expanded (B, T, 3·NH·HS)
// buffer: the difference is the price of the expansion and the dK/dV sums.
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/attention/attention.h"
#include "kernels/gqa/gqa.h"

namespace dstrain::kernels {
namespace {

// Args: B, T, NH, NKV, HS.
struct Dims {
  int B, T, NH, NKV, HS;
  explicit Dims(const benchmark::State& state)
      : B(state.range(0)),
        T(state.range(1)),
        NH(state.range(2)),
        NKV(state.range(3)),
        HS(state.range(4)) {}
  int64_t Qkv() const { return int64_t{B} * T * (NH + 2 * NKV) * HS; }
  int64_t Out() const { return int64_t{B} * T * NH * HS; }
  int64_t Att() const { return AttentionStateFloats(B, T, NH); }
  // The full T×T square, as attention_benchmark counts: 4·B·NH·T²·HS forward, twice that back.
  double Flops() const { return 4.0 * B * NH * double(T) * T * HS; }
};

std::vector<float> Values(int64_t n) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = (i % 97) * 0.01f - 0.5f;
  return v;
}

void BM_GqaForward(benchmark::State& state) {
  const Dims d(state);
  const auto qkv = Values(d.Qkv());
  std::vector<float> out(d.Out()), att(d.Att());
  std::vector<float> scratch(GqaForwardScratchFloats(d.B, d.T, d.NH, d.NKV, d.HS));
  for (auto _ : state) {
    GqaForward(out.data(), att.data(), scratch.data(), qkv.data(), d.B, d.T, d.NH, d.NKV, d.HS);
    benchmark::ClobberMemory();
  }
  state.counters["flops"] =
      benchmark::Counter(d.Flops() * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_GqaBackward(benchmark::State& state) {
  const Dims d(state);
  const auto qkv = Values(d.Qkv()), dout = Values(d.Out());
  std::vector<float> out(d.Out()), att(d.Att()), dqkv(d.Qkv());
  std::vector<float> fwd(GqaForwardScratchFloats(d.B, d.T, d.NH, d.NKV, d.HS));
  std::vector<float> scratch(GqaBackwardScratchFloats(d.B, d.T, d.NH, d.NKV, d.HS));
  GqaForward(out.data(), att.data(), fwd.data(), qkv.data(), d.B, d.T, d.NH, d.NKV, d.HS);
  for (auto _ : state) {
    GqaBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), d.B, d.T, d.NH,
                d.NKV, d.HS);
    benchmark::ClobberMemory();
  }
  state.counters["flops"] =
      benchmark::Counter(2 * d.Flops() * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_AttentionSameShapeForward(benchmark::State& state) {
  const Dims d(state);
  const int C = d.NH * d.HS;
  const auto qkv = Values(int64_t{d.B} * d.T * 3 * C);
  std::vector<float> out(d.Out()), att(d.Att());
  for (auto _ : state) {
    AttentionForward(out.data(), att.data(), qkv.data(), d.B, d.T, C, d.NH);
    benchmark::ClobberMemory();
  }
  state.counters["flops"] =
      benchmark::Counter(d.Flops() * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_AttentionSameShapeBackward(benchmark::State& state) {
  const Dims d(state);
  const int C = d.NH * d.HS;
  const auto qkv = Values(int64_t{d.B} * d.T * 3 * C), dout = Values(d.Out());
  std::vector<float> out(d.Out()), att(d.Att()), dqkv(qkv.size());
  std::vector<float> scratch(AttentionBackwardScratchFloats(d.B, d.T, C, d.NH));
  AttentionForward(out.data(), att.data(), qkv.data(), d.B, d.T, C, d.NH);
  for (auto _ : state) {
    AttentionBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), d.B, d.T, C,
                      d.NH);
    benchmark::ClobberMemory();
  }
  state.counters["flops"] =
      benchmark::Counter(2 * d.Flops() * state.iterations(), benchmark::Counter::kIsRate);
}

// A small Llama-like block (NH = 16, NKV = 4, HS = 64) at T = 256 and 1024.
#define GQA_SHAPES ->Args({4, 256, 16, 4, 64})->Args({1, 1024, 16, 4, 64})->UseRealTime()
BENCHMARK(BM_GqaForward) GQA_SHAPES;
BENCHMARK(BM_AttentionSameShapeForward) GQA_SHAPES;
BENCHMARK(BM_GqaBackward) GQA_SHAPES;
BENCHMARK(BM_AttentionSameShapeBackward) GQA_SHAPES;

}  // namespace
}  // namespace dstrain::kernels

BENCHMARK_MAIN();
