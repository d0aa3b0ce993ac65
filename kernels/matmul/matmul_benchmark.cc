// GEMM throughput at GPT shapes, fp32 against bf16: bazel run //kernels/matmul:matmul_benchmark
//
// Shapes are the larger linear layers of the two GPT models the README measures, M = B·T rows
// (1024 to 4096) by (K, N) = (in, out) features: with C = 256 the qkv projection 256→768 and the
// MLP's 256→1024 and 1024→256 and the LM head 256→8192; with C = 768 (GPT-2 small) 768→2304,
// 768→3072 and 3072→768.
//   BM_Sgemm / BM_GemmBf16: the GEMM alone, forward layout out = x · Wᵀ (bf16 operands ready).
//   BM_MatmulForward[Bf16] / BM_MatmulBackward[Bf16]: the layer functions; the bf16 ones include
//   rounding their fp32 operands.
// Counter GFLOP/s: 2·M·N·K per GEMM (the backward runs two). After the runs a table prints each
// bf16 rate beside its fp32 counterpart and the ratio (the best repetition of each with
// --benchmark_repetitions=N, which a shared machine needs).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cast/cast.h"
#include "kernels/matmul/matmul.h"

namespace dstrain::kernels {
namespace {

std::vector<float> Values(int64_t n, uint32_t seed) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = ((i * 2654435761u + seed) % 2001) * 1e-3f - 1.f;
  return v;
}

std::vector<uint16_t> Bf16Values(int64_t n, uint32_t seed) {
  const std::vector<float> f = Values(n, seed);
  std::vector<uint16_t> h(n);
  FloatToHalf(DType::kBF16, h.data(), f.data(), n);
  return h;
}

void SetFlops(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Args: M, K, N.
void BM_Sgemm(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const auto x = Values(M * K, 1), w = Values(N * K, 2);
  std::vector<float> out(M * N);
  for (auto _ : state) {
    Sgemm(false, true, M, N, K, 1.f, x.data(), K, w.data(), K, 0.f, out.data(), N);
    benchmark::ClobberMemory();
  }
  SetFlops(state, 2.0 * M * N * K);
}

void BM_GemmBf16(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const auto x = Bf16Values(M * K, 1), w = Bf16Values(N * K, 2);
  std::vector<float> out(M * N);
  for (auto _ : state) {
    GemmBf16(false, true, M, N, K, 1.f, x.data(), K, w.data(), K, 0.f, out.data(), N);
    benchmark::ClobberMemory();
  }
  SetFlops(state, 2.0 * M * N * K);
}

template <bool kBf16>
void BM_Forward(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const auto x = Values(M * K, 1), w = Values(N * K, 2), b = Values(N, 3);
  std::vector<float> out(M * N);
  for (auto _ : state) {
    if (kBf16) {
      MatmulForwardBf16(out.data(), x.data(), w.data(), b.data(), M, K, N);
    } else {
      MatmulForward(out.data(), x.data(), w.data(), b.data(), M, K, N);
    }
    benchmark::ClobberMemory();
  }
  SetFlops(state, 2.0 * M * N * K);
}

template <bool kBf16>
void BM_Backward(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const auto x = Values(M * K, 1), w = Values(N * K, 2), dout = Values(M * N, 3);
  std::vector<float> dx(M * K), dw(N * K), db(N);
  for (auto _ : state) {
    if (kBf16) {
      MatmulBackwardBf16(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), M, K, N);
    } else {
      MatmulBackward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), M, K, N);
    }
    benchmark::ClobberMemory();
  }
  SetFlops(state, 4.0 * M * N * K);
}

// Each fp32 benchmark runs right before its bf16 counterpart, so that both see the same load on
// a shared machine.
void RegisterBenchmarks() {
  const std::pair<int64_t, int64_t> kn[] = {{256, 768},  {256, 1024}, {1024, 256}, {768, 2304},
                                            {768, 3072}, {3072, 768}, {256, 8192}};
  const auto add = [](const char* name, void (*fn)(benchmark::State&), int64_t M, int64_t K,
                      int64_t N) {
    benchmark::RegisterBenchmark(name, fn)->Args({M, K, N})->UseRealTime()->Unit(
        benchmark::kMillisecond);
  };
  for (int64_t M : {1024, 2048, 4096}) {
    for (const auto& [K, N] : kn) {
      add("BM_Sgemm", BM_Sgemm, M, K, N);
      add("BM_GemmBf16", BM_GemmBf16, M, K, N);
    }
  }
  for (const auto& [K, N] : kn) {
    add("BM_MatmulForward", BM_Forward<false>, 4096, K, N);
    add("BM_MatmulForwardBf16", BM_Forward<true>, 4096, K, N);
    add("BM_MatmulBackward", BM_Backward<false>, 4096, K, N);
    add("BM_MatmulBackwardBf16", BM_Backward<true>, 4096, K, N);
  }
}

// The console output, plus each run's GFLOP/s kept for the ratio table.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      const auto it = run.counters.find("GFLOP/s");
      if (run.run_type == Run::RT_Iteration && !run.error_occurred && it != run.counters.end()) {
        Keep(run.benchmark_name(), it->second.value);
      }
    }
  }

  // One line per fp32 run whose bf16 counterpart also ran.
  void PrintRatios() const {
    const std::pair<std::string, std::string> pairs[] = {
        {"BM_Sgemm/", "BM_GemmBf16/"},
        {"BM_MatmulForward/", "BM_MatmulForwardBf16/"},
        {"BM_MatmulBackward/", "BM_MatmulBackwardBf16/"}};
    std::printf("\n%-42s %12s %12s %7s\n", "fp32 benchmark (M/K/N)", "fp32 GFLOP/s", "bf16 GFLOP/s",
                "ratio");
    for (const auto& [fp32, bf16] : pairs) {
      for (const auto& [name, rate] : rates_) {
        if (name.rfind(fp32, 0) != 0) continue;
        const std::string partner = bf16 + name.substr(fp32.size());
        for (const auto& [other, other_rate] : rates_) {
          if (other != partner) continue;
          std::printf("%-42s %12.1f %12.1f %6.2fx\n", name.c_str(), rate, other_rate,
                      other_rate / rate);
        }
      }
    }
  }

 private:
  // With --benchmark_repetitions the best rate of each benchmark: on a shared machine the slower
  // repetitions are the ones that lost cores to other work.
  void Keep(const std::string& name, double rate) {
    for (auto& [kept, kept_rate] : rates_) {
      if (kept == name) {
        kept_rate = std::max(kept_rate, rate);
        return;
      }
    }
    rates_.emplace_back(name, rate);
  }

  std::vector<std::pair<std::string, double>> rates_;  // in the order the runs finished
};

}  // namespace
}  // namespace dstrain::kernels

int main(int argc, char** argv) {
  dstrain::kernels::RegisterBenchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  dstrain::kernels::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintRatios();
  benchmark::Shutdown();
  return 0;
}
