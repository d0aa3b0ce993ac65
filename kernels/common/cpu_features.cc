#include "kernels/common/cpu_features.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace dstrain::kernels {
namespace {

CpuFeatures Detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // libgcc's detection already clears AVX/AVX-512 bits when XCR0 shows that the OS does not save
  // the YMM/ZMM state, so these are safe to act on.
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  return f;
}

Isa CapFromEnvironment() {
  const char* env = std::getenv("DSTRAIN_MAX_ISA");
  if (env == nullptr || *env == '\0') return Isa::kAvx512;
  Isa isa;
  if (!ParseIsa(env, &isa)) {
    std::fprintf(stderr, "dstrain: ignoring DSTRAIN_MAX_ISA=%s (want scalar, avx2 or avx512)\n",
                 env);
    return Isa::kAvx512;
  }
  return isa;
}

std::atomic<int>& Cap() {
  static std::atomic<int> cap{static_cast<int>(CapFromEnvironment())};
  return cap;
}

}  // namespace

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures features = Detect();
  return features;
}

Isa BestIsa() {
  static const Isa best = [] {
    const CpuFeatures& f = GetCpuFeatures();
    if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma) return Isa::kAvx512;
    if (f.avx2 && f.fma) return Isa::kAvx2;
    return Isa::kScalar;
  }();
  return best;
}

Isa ActiveIsa() {
  const int cap = Cap().load(std::memory_order_relaxed);
  const int best = static_cast<int>(BestIsa());
  return static_cast<Isa>(cap < best ? cap : best);
}

Isa MaxIsa() { return static_cast<Isa>(Cap().load(std::memory_order_relaxed)); }

void SetMaxIsa(Isa cap) { Cap().store(static_cast<int>(cap), std::memory_order_relaxed); }

std::vector<Isa> AvailableIsas() {
  std::vector<Isa> isas;
  for (int i = 0; i <= static_cast<int>(BestIsa()); ++i) isas.push_back(static_cast<Isa>(i));
  return isas;
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

bool ParseIsa(std::string_view name, Isa* isa) {
  for (Isa candidate : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (name == IsaName(candidate)) {
      *isa = candidate;
      return true;
    }
  }
  return false;
}

}  // namespace dstrain::kernels
