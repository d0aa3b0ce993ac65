// What SIMD instruction sets this CPU offers, and which one the kernels use.
//
// Every vectorised kernel is compiled three times from one source (see simd.h): a portable scalar
// build, an AVX2 + FMA build and an AVX-512 (F/BW/VL/DQ) build. Each public kernel entry point
// asks ActiveIsa() which build to run. ActiveIsa() is the best ISA the CPU *and* the OS support
// (CPUID plus XGETBV, through __builtin_cpu_supports), lowered by a cap:
//   - SetMaxIsa() / ScopedMaxIsa: tests use them to run every branch on one machine;
//   - the environment variable DSTRAIN_MAX_ISA=scalar|avx2|avx512, read once at first use, so a
//     user can rule out a suspect branch without rebuilding.
// A cap above what the CPU supports is harmless: the CPU's best is used instead.
//
// Thread-safe: the cap is an atomic; detection runs once.
#pragma once

#include <string_view>
#include <vector>

namespace dstrain::kernels {

// Ordered from least to most capable.
enum class Isa : int {
  kScalar = 0,  // baseline x86-64 (SSE2); also the path on non-x86 machines
  kAvx2 = 1,    // AVX2 + FMA (Haswell, Zen 1 and later)
  kAvx512 = 2,  // AVX-512 F + BW + VL + DQ (Skylake-SP, Ice Lake, Zen 4 and later)
};

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512bf16 = false;  // reported for other kernels (bf16 GEMM); no kernel here needs it
  // AMX-TILE and AMX-BF16, and Linux granted this process the tile data state (arch_prctl
  // ARCH_REQ_XCOMP_PERM, asked once at detection unless DSTRAIN_NO_AMX is set): the tile
  // products of kernels/attention/bf16_tiles.h.
  bool amx_bf16 = false;
};

// Detected once; the OS must also save the wide registers for a feature to count.
const CpuFeatures& GetCpuFeatures();

// The most capable ISA this machine can run.
Isa BestIsa();

// The ISA kernels dispatch to: min(BestIsa(), MaxIsa()).
Isa ActiveIsa();

// The cap set by SetMaxIsa() or DSTRAIN_MAX_ISA; kAvx512 (no cap) by default.
Isa MaxIsa();
void SetMaxIsa(Isa cap);

// Whether kernels may use AMX's bf16 tile products: the CPU and OS allow it (amx_bf16, false when
// the environment variable DSTRAIN_NO_AMX is set and not "0"), SetAmxAllowed has not ruled it
// out, and the ISA cap is not below kAvx512 (every AMX CPU has AVX-512, so capping the ISA also
// rules AMX out). Callers that pair a forward and a backward pass must not change the answer
// between them (CpuOps asks in each pass).
bool AmxUsable();

// Allows (the default) or rules out AMX for the process; tests use ScopedAmxAllowed to compare
// with a backend that has no AMX route. Not for use while kernels run on other threads.
void SetAmxAllowed(bool allowed);
bool AmxAllowed();

class ScopedAmxAllowed {
 public:
  explicit ScopedAmxAllowed(bool allowed) : saved_(AmxAllowed()) { SetAmxAllowed(allowed); }
  ~ScopedAmxAllowed() { SetAmxAllowed(saved_); }
  ScopedAmxAllowed(const ScopedAmxAllowed&) = delete;
  ScopedAmxAllowed& operator=(const ScopedAmxAllowed&) = delete;

 private:
  bool saved_;
};

// kScalar up to BestIsa(), in order: the branches a test should cover on this machine.
std::vector<Isa> AvailableIsas();

// "scalar", "avx2", "avx512".
const char* IsaName(Isa isa);

// Parses IsaName()'s spellings; returns false for anything else.
bool ParseIsa(std::string_view name, Isa* isa);

// Caps the ISA for the lifetime of the object, then restores the previous cap. For tests; not for
// concurrent use with kernels running on other threads that expect a different cap.
class ScopedMaxIsa {
 public:
  explicit ScopedMaxIsa(Isa cap) : saved_(MaxIsa()) { SetMaxIsa(cap); }
  ~ScopedMaxIsa() { SetMaxIsa(saved_); }
  ScopedMaxIsa(const ScopedMaxIsa&) = delete;
  ScopedMaxIsa& operator=(const ScopedMaxIsa&) = delete;

 private:
  Isa saved_;
};

}  // namespace dstrain::kernels
