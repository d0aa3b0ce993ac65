// The host AdamW against the memory bandwidth that bounds it, measured in one run on the same
// arrays, for offload_bench.sh (issue 17's target: >= 90% of the DRAM bound):
//
//   adamw_bound [--params 67108864] [--reps 7]
//
// Bandwidth kernels, each over the same four arrays of --params floats the fp32 update uses, on
// every OpenMP thread with the kernels' own split (kernels::ParallelFor), counting the bytes the
// program reads and writes (STREAM's convention):
//   copy    a = b                       8 B/element  (the store's read-for-ownership not counted)
//   triad   a = b + s·c                12 B/element  (ditto)
//   update  p += s·g, m += s·g, v += s·g  28 B/element: AdamW's own traffic (4 arrays read,
//           3 written in place, so no read-for-ownership is hidden) with next to no arithmetic.
// The DRAM bound is the highest of the three, in parameters per second: bandwidth / 28.
// AdamWUpdate (fp32: reads p, g, m, v, writes p, m, v) and AdamWUpdateMixed (bf16: reads the fp32
// master, a bf16 gradient, m, v; writes the master, m, v and the bf16 copy) move 28 bytes per
// parameter each. Every timing is the median of --reps runs after one untimed run. Prints one JSON
// line.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/flags/flags.h"
#include "common/runtime/process_init.h"
#include "kernels/adamw/adamw.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/threading.h"
#include "worker/tensor/allocator.h"

namespace dstrain {
namespace {

// One clone per vector width, picked at load time as the kernels pick theirs, so the bandwidth
// kernels are not held back to SSE2 by the build's portable -O2.
#define DT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

DT_CLONES void CopyRange(float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] = b[i];
}

DT_CLONES void TriadRange(float* a, const float* b, const float* c, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
}

DT_CLONES void UpdateRange(float* p, const float* g, float* m, float* v, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float d = s * g[i];
    p[i] += d;
    m[i] += d;
    v[i] += d;
  }
}

// n elements of T from `allocator`, each set to `value`.
template <typename T>
class HostArray {
 public:
  HostArray(tensor::Allocator& allocator, int64_t n, T value)
      : allocator_(allocator), n_(n), data_(Allocate(allocator, n)) {
    std::fill(data_, data_ + n, value);
  }
  ~HostArray() { allocator_.Free(data_, n_ * sizeof(T), tensor::MemoryCategory::kOther); }
  HostArray(const HostArray&) = delete;
  HostArray& operator=(const HostArray&) = delete;

  T* data() { return data_; }
  T* begin() { return data_; }
  T* end() { return data_ + n_; }

 private:
  static T* Allocate(tensor::Allocator& allocator, int64_t n) {
    auto p = allocator.Allocate(n * sizeof(T), tensor::MemoryCategory::kOther);
    if (!p.ok()) {
      absl::FPrintF(stderr, "%s\n", p.status().message());
      std::exit(1);
    }
    return static_cast<T*>(*p);
  }

  tensor::Allocator& allocator_;
  const int64_t n_;
  T* const data_;
};

// Median seconds of `reps` runs of fn, after one untimed run (page faults, thread start-up).
double MedianSeconds(int reps, const std::function<void()>& fn) {
  fn();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int Run(int argc, char** argv) {
  auto args =
      flags::ParseArgs(std::vector<std::string>(argv + 1, argv + argc), {"params", "reps"}, {});
  if (!args.ok()) {
    absl::FPrintF(stderr, "%s\nusage: adamw_bound [--params N] [--reps N]\n",
                  args.status().message());
    return 2;
  }
  const auto n_or = args->GetInt64("params", int64_t{64} << 20);
  const auto reps_or = args->GetInt("reps", 7);
  if (!n_or.ok() || !reps_or.ok() || *n_or < 1 || *reps_or < 1) {
    absl::FPrintF(stderr, "--params and --reps take positive integers\n");
    return 2;
  }
  const int64_t n = *n_or;
  const int reps = *reps_or;
  const int threads = kernels::KernelThreads();
  constexpr int64_t kAlign = 1024;  // 4 KiB of floats per piece, as the AdamW kernel cuts

  // From the allocator the engine's host tensors come from (its cache colouring included, which
  // decides how fast four equal arrays stream side by side), touched here, on this thread: one
  // NUMA node on the machines this runs on.
  tensor::CpuAllocator allocator;
  HostArray<float> p(allocator, n, 0.1f), g(allocator, n, 0.01f), m(allocator, n, 0.f),
      v(allocator, n, 0.f);
  auto par = [&](const std::function<void(int64_t, int64_t)>& fn) {
    kernels::ParallelFor(n, threads, kAlign, fn);
  };
  const double copy_s = MedianSeconds(reps, [&] {
    par([&](int64_t b, int64_t e) { CopyRange(m.data() + b, p.data() + b, e - b); });
  });
  const double triad_s = MedianSeconds(reps, [&] {
    par([&](int64_t b, int64_t e) {
      TriadRange(m.data() + b, p.data() + b, g.data() + b, 0.5f, e - b);
    });
  });
  // s = 0: the values stay put however many times it runs; the bytes move all the same.
  const double update_s = MedianSeconds(reps, [&] {
    par([&](int64_t b, int64_t e) {
      UpdateRange(p.data() + b, g.data() + b, m.data() + b, v.data() + b, 0.f, e - b);
    });
  });
  std::fill(m.begin(), m.end(), 0.f);
  std::fill(p.begin(), p.end(), 0.1f);

  kernels::AdamWArgs a;
  a.lr = 1e-3;
  a.weight_decay = 0.01;
  a.bias_correction1 = 1 - 0.9;  // step 1's corrections: the arithmetic of any step
  a.bias_correction2 = 1 - 0.999;
  const double fp32_s = MedianSeconds(
      reps, [&] { kernels::AdamWUpdate(p.data(), g.data(), m.data(), v.data(), n, a); });

  // Mixed precision: the fp32 arrays stand in for the master weights and the moments.
  HostArray<uint16_t> g16(allocator, n, 0x3c24), p16(allocator, n, 0);  // 0x3c24: 0.01 in bf16
  const double bf16_s = MedianSeconds(reps, [&] {
    kernels::AdamWUpdateMixed(p.data(), g16.data(), m.data(), v.data(), p16.data(), n, a,
                              DType::kBF16);
  });

  const double gb = 1e9;
  absl::PrintF(
      "{\"params\": %d, \"threads\": %d, \"isa\": \"%s\", \"reps\": %d, "
      "\"copy_gb_s\": %.3f, \"triad_gb_s\": %.3f, \"update_gb_s\": %.3f, "
      "\"adamw_fp32_s\": %.5f, \"adamw_bf16_s\": %.5f}\n",
      n, threads, kernels::IsaName(kernels::ActiveIsa()), reps, 8.0 * n / copy_s / gb,
      12.0 * n / triad_s / gb, 28.0 * n / update_s / gb, fp32_s, bf16_s);
  return 0;
}

}  // namespace
}  // namespace dstrain

int main(int argc, char** argv) {
  dstrain::InitProcess(argv);
  return dstrain::Run(argc, argv);
}
