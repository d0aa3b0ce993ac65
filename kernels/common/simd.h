// Portable SIMD vocabulary for the CPU kernels, and the way each kernel is compiled per ISA.
//
// A kernel's inner loops are written once, in a "body" file (`<op>_body.inc`), against the small
// vocabulary below: a float vector type `Vf` of `kLanes` lanes with loads, stores, arithmetic,
// fused multiply-add, reductions and a fast `Exp` (simd_math.inc). The op's .cc file then includes
// foreach_isa.inc, which compiles that body three times, in three namespaces:
//
//   isa_scalar  — Vf is one float; plain C++, runs on any x86-64 (and non-x86) CPU;
//   isa_avx2    — Vf is __m256 (8 lanes), compiled for AVX2 + FMA;
//   isa_avx512  — Vf is __m512 (16 lanes), compiled for AVX-512 F/BW/VL/DQ.
//
// The AVX2 and AVX-512 copies are compiled inside `#pragma GCC target` regions (the technique
// Highway uses), not with -mavx2/-mavx512f on the command line: only the functions written inside a
// region get the wide instructions, so no inline function shared with other files (std::, absl::)
// can be emitted with AVX-512 code and picked by the linker for a CPU without it. The entry points
// choose a copy at run time with DT_ISA_SELECT, from ActiveIsa() (cpu_features.h).
//
// Rules for body files: no #include, no OpenMP (parallel loops live in the dispatching .cc, which
// calls the per-ISA functions on pieces of the work), no function-local statics.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
// GCC 12's AVX-512 headers initialise `_mm512_undefined_*()` values from themselves, which
// -Wuninitialized flags wherever they are inlined under a target pragma (GCC bug 105593, fixed in
// 13). The warning's location is inside the header, so silencing it around the include is enough.
#if defined(__clang__)
#include <immintrin.h>
#else
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif
#define DT_SIMD_X86 1
#else
#define DT_SIMD_X86 0
#endif

#include "kernels/common/cpu_features.h"

// The two vector builds target "avx2,fma" and "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma" (the
// AVX-512 build keeps AVX2 so 256-bit helpers work inside it); BestIsa() requires exactly these.

// _Pragma needs one unbroken string literal.
// clang-format off
#if defined(__clang__)
#define DT_SIMD_BEGIN_AVX2 \
  _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define DT_SIMD_BEGIN_AVX512 \
  _Pragma("clang attribute push(__attribute__((target(\"avx512f,avx512bw,avx512vl,avx512dq,avx2,fma\"))), apply_to = function)")
#define DT_SIMD_END _Pragma("clang attribute pop")
#else
#define DT_SIMD_BEGIN_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define DT_SIMD_BEGIN_AVX512 \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx512bw,avx512vl,avx512dq,avx2,fma\")")
#define DT_SIMD_END _Pragma("GCC pop_options")
#endif
// clang-format on

#define DT_SIMD_INLINE inline __attribute__((always_inline))

// ---------------------------------------------------------------------------------------------
// Scalar: one lane. MulAdd is a*b+c unfused (a true fma would be a slow libm call without FMA
// hardware); everything else is exact IEEE single precision like the vector builds.
namespace dstrain::kernels::simd::scalar {

inline constexpr int kLanes = 1;
struct Vf {
  float v;
};
struct Vd {
  double v;
};

DT_SIMD_INLINE Vf Zero() { return {0.f}; }
DT_SIMD_INLINE Vf Set(float x) { return {x}; }
DT_SIMD_INLINE Vf Load(const float* p) { return {*p}; }
// Loads the first n (0..kLanes) lanes from p, zeros the rest; reads nothing past p[n-1].
DT_SIMD_INLINE Vf LoadN(const float* p, int n) { return {n > 0 ? *p : 0.f}; }
DT_SIMD_INLINE void Store(float* p, Vf x) { *p = x.v; }
// Stores the first n (0..kLanes) lanes; writes nothing past p[n-1].
DT_SIMD_INLINE void StoreN(float* p, Vf x, int n) {
  if (n > 0) *p = x.v;
}
// Lanes [0, n) from a, the rest from b.
DT_SIMD_INLINE Vf Blend(Vf a, Vf b, int n) { return n > 0 ? a : b; }
DT_SIMD_INLINE Vf operator+(Vf a, Vf b) { return {a.v + b.v}; }
DT_SIMD_INLINE Vf operator-(Vf a, Vf b) { return {a.v - b.v}; }
DT_SIMD_INLINE Vf operator*(Vf a, Vf b) { return {a.v * b.v}; }
DT_SIMD_INLINE Vf operator/(Vf a, Vf b) { return {a.v / b.v}; }
DT_SIMD_INLINE Vf MulAdd(Vf a, Vf b, Vf c) { return {a.v * b.v + c.v}; }     // a*b + c
DT_SIMD_INLINE Vf NegMulAdd(Vf a, Vf b, Vf c) { return {c.v - a.v * b.v}; }  // c - a*b
DT_SIMD_INLINE Vf Max(Vf a, Vf b) { return {a.v > b.v ? a.v : b.v}; }
DT_SIMD_INLINE Vf Min(Vf a, Vf b) { return {a.v < b.v ? a.v : b.v}; }
DT_SIMD_INLINE Vf Sqrt(Vf a) { return {__builtin_sqrtf(a.v)}; }
// Round to nearest, ties to even, for |x| < 2^22: adding 1.5·2^23 pushes the fraction bits out.
DT_SIMD_INLINE Vf Round(Vf a) {
  return {(a.v + 12582912.f) - 12582912.f};  // not folded: no -ffast-math
}
// 2^n for integral n in [-126, 127], built in the exponent field.
DT_SIMD_INLINE Vf Pow2Int(Vf n) {
  const int32_t bits = (static_cast<int32_t>(n.v) + 127) << 23;
  float r;
  std::memcpy(&r, &bits, sizeof(r));
  return {r};
}
// A store that bypasses the caches (for large outputs not read again soon); p must be aligned to
// kLanes floats. Call StreamFence() before other threads read what was streamed.
DT_SIMD_INLINE void StoreStream(float* p, Vf x) { *p = x.v; }
DT_SIMD_INLINE void StreamFence() {}
DT_SIMD_INLINE float ReduceSum(Vf a) { return a.v; }
DT_SIMD_INLINE float ReduceMax(Vf a) { return a.v; }

// dst[c·ldd + r] = src[r·lds + c] for r, c < kLanes: a kLanes × kLanes block transpose.
DT_SIMD_INLINE void TransposeBlock(const float* src, int64_t lds, float* dst, int64_t ldd) {
  (void)lds;
  (void)ldd;
  *dst = *src;
}

DT_SIMD_INLINE Vd ZeroD() { return {0.0}; }
// lo += x² in double (one lane: hi is untouched).
DT_SIMD_INLINE void AccumulateSquares(Vf x, Vd* lo, Vd* /*hi*/) {
  const double d = x.v;
  lo->v += d * d;
}
DT_SIMD_INLINE double ReduceSumD(Vd a) { return a.v; }

#include "kernels/common/simd_math.inc"

}  // namespace dstrain::kernels::simd::scalar

#if DT_SIMD_X86
// ---------------------------------------------------------------------------------------------
// AVX2 + FMA: 8 lanes.
DT_SIMD_BEGIN_AVX2
namespace dstrain::kernels::simd::avx2 {

inline constexpr int kLanes = 8;
struct Vf {
  __m256 v;
};
struct Vd {
  __m256d v;
};

// Lane masks for partial loads/stores: 8 all-ones then 8 zeros; a window at 8-n has n ones.
alignas(64) inline constexpr int32_t kMaskWindow[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                        0,  0,  0,  0,  0,  0,  0,  0};
DT_SIMD_INLINE __m256i MaskN(int n) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskWindow + 8 - n));
}

DT_SIMD_INLINE Vf Zero() { return {_mm256_setzero_ps()}; }
DT_SIMD_INLINE Vf Set(float x) { return {_mm256_set1_ps(x)}; }
DT_SIMD_INLINE Vf Load(const float* p) { return {_mm256_loadu_ps(p)}; }
DT_SIMD_INLINE Vf LoadN(const float* p, int n) { return {_mm256_maskload_ps(p, MaskN(n))}; }
DT_SIMD_INLINE void Store(float* p, Vf x) { _mm256_storeu_ps(p, x.v); }
DT_SIMD_INLINE void StoreN(float* p, Vf x, int n) { _mm256_maskstore_ps(p, MaskN(n), x.v); }
DT_SIMD_INLINE void StoreStream(float* p, Vf x) { _mm256_stream_ps(p, x.v); }
DT_SIMD_INLINE void StreamFence() { _mm_sfence(); }
DT_SIMD_INLINE Vf Blend(Vf a, Vf b, int n) {
  return {_mm256_blendv_ps(b.v, a.v, _mm256_castsi256_ps(MaskN(n)))};
}
DT_SIMD_INLINE Vf operator+(Vf a, Vf b) { return {_mm256_add_ps(a.v, b.v)}; }
DT_SIMD_INLINE Vf operator-(Vf a, Vf b) { return {_mm256_sub_ps(a.v, b.v)}; }
DT_SIMD_INLINE Vf operator*(Vf a, Vf b) { return {_mm256_mul_ps(a.v, b.v)}; }
DT_SIMD_INLINE Vf operator/(Vf a, Vf b) { return {_mm256_div_ps(a.v, b.v)}; }
DT_SIMD_INLINE Vf MulAdd(Vf a, Vf b, Vf c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
DT_SIMD_INLINE Vf NegMulAdd(Vf a, Vf b, Vf c) { return {_mm256_fnmadd_ps(a.v, b.v, c.v)}; }
DT_SIMD_INLINE Vf Max(Vf a, Vf b) { return {_mm256_max_ps(a.v, b.v)}; }
DT_SIMD_INLINE Vf Min(Vf a, Vf b) { return {_mm256_min_ps(a.v, b.v)}; }
DT_SIMD_INLINE Vf Sqrt(Vf a) { return {_mm256_sqrt_ps(a.v)}; }
DT_SIMD_INLINE Vf Round(Vf a) {
  return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
DT_SIMD_INLINE Vf Pow2Int(Vf n) {
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
}
DT_SIMD_INLINE float ReduceSum(Vf a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
DT_SIMD_INLINE float ReduceMax(Vf a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

DT_SIMD_INLINE void TransposeBlock(const float* src, int64_t lds, float* dst, int64_t ldd) {
  // Interleave row pairs, then row quads within each 128-bit lane; swap lanes last.
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    const __m256 a = _mm256_loadu_ps(src + (2 * i) * lds);
    const __m256 b = _mm256_loadu_ps(src + (2 * i + 1) * lds);
    t[2 * i] = _mm256_unpacklo_ps(a, b);
    t[2 * i + 1] = _mm256_unpackhi_ps(a, b);
  }
  for (int i = 0; i < 2; ++i) {  // u[4i + j], lane L: rows 4i..4i+3 of column 4L + j
    const __m256d t0 = _mm256_castps_pd(t[4 * i]), t1 = _mm256_castps_pd(t[4 * i + 1]);
    const __m256d t2 = _mm256_castps_pd(t[4 * i + 2]), t3 = _mm256_castps_pd(t[4 * i + 3]);
    u[4 * i + 0] = _mm256_castpd_ps(_mm256_unpacklo_pd(t0, t2));
    u[4 * i + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(t0, t2));
    u[4 * i + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(t1, t3));
    u[4 * i + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(t1, t3));
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * ldd, _mm256_permute2f128_ps(u[j], u[4 + j], 0x20));
    _mm256_storeu_ps(dst + (4 + j) * ldd, _mm256_permute2f128_ps(u[j], u[4 + j], 0x31));
  }
}

DT_SIMD_INLINE Vd ZeroD() { return {_mm256_setzero_pd()}; }
DT_SIMD_INLINE void AccumulateSquares(Vf x, Vd* lo, Vd* hi) {
  const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(x.v));
  const __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(x.v, 1));
  lo->v = _mm256_fmadd_pd(a, a, lo->v);  // exact square: 24-bit mantissas fit in 53 bits
  hi->v = _mm256_fmadd_pd(b, b, hi->v);
}
DT_SIMD_INLINE double ReduceSumD(Vd a) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a.v), _mm256_extractf128_pd(a.v, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

#include "kernels/common/simd_math.inc"

}  // namespace dstrain::kernels::simd::avx2
DT_SIMD_END

// ---------------------------------------------------------------------------------------------
// AVX-512: 16 lanes. Partial loads/stores use lane masks (no fault past the last lane).
DT_SIMD_BEGIN_AVX512
namespace dstrain::kernels::simd::avx512 {

inline constexpr int kLanes = 16;
struct Vf {
  __m512 v;
};
struct Vd {
  __m512d v;
};

DT_SIMD_INLINE __mmask16 MaskN(int n) { return static_cast<__mmask16>((1u << n) - 1u); }

DT_SIMD_INLINE Vf Zero() { return {_mm512_setzero_ps()}; }
DT_SIMD_INLINE Vf Set(float x) { return {_mm512_set1_ps(x)}; }
DT_SIMD_INLINE Vf Load(const float* p) { return {_mm512_loadu_ps(p)}; }
DT_SIMD_INLINE Vf LoadN(const float* p, int n) { return {_mm512_maskz_loadu_ps(MaskN(n), p)}; }
DT_SIMD_INLINE void Store(float* p, Vf x) { _mm512_storeu_ps(p, x.v); }
DT_SIMD_INLINE void StoreN(float* p, Vf x, int n) { _mm512_mask_storeu_ps(p, MaskN(n), x.v); }
DT_SIMD_INLINE void StoreStream(float* p, Vf x) { _mm512_stream_ps(p, x.v); }
DT_SIMD_INLINE void StreamFence() { _mm_sfence(); }
DT_SIMD_INLINE Vf Blend(Vf a, Vf b, int n) { return {_mm512_mask_blend_ps(MaskN(n), b.v, a.v)}; }
DT_SIMD_INLINE Vf operator+(Vf a, Vf b) { return {_mm512_add_ps(a.v, b.v)}; }
DT_SIMD_INLINE Vf operator-(Vf a, Vf b) { return {_mm512_sub_ps(a.v, b.v)}; }
DT_SIMD_INLINE Vf operator*(Vf a, Vf b) { return {_mm512_mul_ps(a.v, b.v)}; }
DT_SIMD_INLINE Vf operator/(Vf a, Vf b) { return {_mm512_div_ps(a.v, b.v)}; }
DT_SIMD_INLINE Vf MulAdd(Vf a, Vf b, Vf c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
DT_SIMD_INLINE Vf NegMulAdd(Vf a, Vf b, Vf c) { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; }
DT_SIMD_INLINE Vf Max(Vf a, Vf b) { return {_mm512_max_ps(a.v, b.v)}; }
DT_SIMD_INLINE Vf Min(Vf a, Vf b) { return {_mm512_min_ps(a.v, b.v)}; }
DT_SIMD_INLINE Vf Sqrt(Vf a) { return {_mm512_sqrt_ps(a.v)}; }
DT_SIMD_INLINE Vf Round(Vf a) {
  return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
DT_SIMD_INLINE Vf Pow2Int(Vf n) {
  const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
}
DT_SIMD_INLINE float ReduceSum(Vf a) {
  // Fixed pairwise order (halves, then quarters, ...): the same result on every call.
  const __m256 h =
      _mm256_add_ps(_mm512_castps512_ps256(a.v),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a.v), 1)));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
DT_SIMD_INLINE float ReduceMax(Vf a) { return _mm512_reduce_max_ps(a.v); }

DT_SIMD_INLINE void TransposeBlock(const float* src, int64_t lds, float* dst, int64_t ldd) {
  // Interleave row pairs, then row quads within each 128-bit lane, then gather lanes.
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    const __m512 a = _mm512_loadu_ps(src + (2 * i) * lds);
    const __m512 b = _mm512_loadu_ps(src + (2 * i + 1) * lds);
    t[2 * i] = _mm512_unpacklo_ps(a, b);
    t[2 * i + 1] = _mm512_unpackhi_ps(a, b);
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + j], lane L: rows 4i..4i+3 of column 4L + j
    const __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
    u[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int j = 0; j < 4; ++j) {
    // 0x88 picks lanes 0 and 2 of each source, 0xdd lanes 1 and 3.
    const __m512 v0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
    const __m512 v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
    const __m512 v3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
    _mm512_storeu_ps(dst + j * ldd, _mm512_shuffle_f32x4(v0, v2, 0x88));
    _mm512_storeu_ps(dst + (4 + j) * ldd, _mm512_shuffle_f32x4(v1, v3, 0x88));
    _mm512_storeu_ps(dst + (8 + j) * ldd, _mm512_shuffle_f32x4(v0, v2, 0xdd));
    _mm512_storeu_ps(dst + (12 + j) * ldd, _mm512_shuffle_f32x4(v1, v3, 0xdd));
  }
}

DT_SIMD_INLINE Vd ZeroD() { return {_mm512_setzero_pd()}; }
DT_SIMD_INLINE void AccumulateSquares(Vf x, Vd* lo, Vd* hi) {
  const __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(x.v));
  const __m512d b =
      _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x.v), 1)));
  lo->v = _mm512_fmadd_pd(a, a, lo->v);
  hi->v = _mm512_fmadd_pd(b, b, hi->v);
}
DT_SIMD_INLINE double ReduceSumD(Vd a) {
  const __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(a.v), _mm512_extractf64x4_pd(a.v, 1));
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

#include "kernels/common/simd_math.inc"

}  // namespace dstrain::kernels::simd::avx512
DT_SIMD_END
#endif  // DT_SIMD_X86

// Picks the ISA copy of `fn` (a function in the isa_scalar / isa_avx2 / isa_avx512 namespaces that
// foreach_isa.inc creates) for ActiveIsa(). Evaluates to a function pointer.
#if DT_SIMD_X86
#define DT_ISA_SELECT(fn)                                                                \
  (::dstrain::kernels::ActiveIsa() == ::dstrain::kernels::Isa::kAvx512 ? &isa_avx512::fn \
   : ::dstrain::kernels::ActiveIsa() == ::dstrain::kernels::Isa::kAvx2 ? &isa_avx2::fn   \
                                                                       : &isa_scalar::fn)
#else
#define DT_ISA_SELECT(fn) (&isa_scalar::fn)
#endif
