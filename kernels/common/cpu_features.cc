#include "kernels/common/cpu_features.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace dstrain::kernels {
namespace {

#if defined(__x86_64__)
// DSTRAIN_NO_AMX set (and not "0"): AMX is not used, nor its state asked for.
bool AmxRuledOutByEnvironment() {
  const char* env = std::getenv("DSTRAIN_NO_AMX");
  return env != nullptr && *env != '\0' && std::string_view(env) != "0";
}

// CPUID leaf 7 reports the instructions; Linux (5.16 and later) hands out the 8 KB tile data
// state only to a process that asks for it (which enlarges its signal frames), and refuses where
// the CPU or kernel lacks it.
bool DetectAmxBf16() {
  if (AmxRuledOutByEnvironment()) return false;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  constexpr unsigned kAmxBf16 = 1u << 22, kAmxTile = 1u << 24;
  if ((edx & kAmxBf16) == 0 || (edx & kAmxTile) == 0) return false;
  constexpr long kArchReqXcompPerm = 0x1023;  // asm/prctl.h
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}
#endif

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
#if defined(__x86_64__)
  f.amx_bf16 = DetectAmxBf16();
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

std::atomic<bool> amx_allowed{true};

bool AmxUsable() {
  return GetCpuFeatures().amx_bf16 && AmxAllowed() && ActiveIsa() == Isa::kAvx512;
}

void SetAmxAllowed(bool allowed) { amx_allowed.store(allowed, std::memory_order_relaxed); }

bool AmxAllowed() { return amx_allowed.load(std::memory_order_relaxed); }

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
