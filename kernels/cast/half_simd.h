// 16-bit float loads and stores for the per-ISA kernel bodies (see kernels/common/simd.h): the
// vocabulary simd.h lacks for kernels that keep bf16 or fp16 in memory and compute in fp32.
//
//   LoadHalf<kType>(p) / LoadHalfN<kType>(p, n)     kLanes 16-bit values widened to a Vf (exact)
//   StoreHalf<kType>(p, x) / StoreHalfN<kType>(...)  a Vf rounded to nearest even and stored
//   StreamHalf<kType>(p, x)                          StoreHalf bypassing the caches (simd.h's
//                                                    StoreStream); p aligned to kLanes 16-bit
//                                                    values, StreamFence() before others read
//   StoreSquareSums(out, lo, hi)                     the kLanes doubles of AccumulateSquares
//   StoreTo(p, x) / StoreToN(p, x, n)                Store / StoreN for float* p, StoreHalf /
//                                                    StoreHalfN<kBF16> for uint16_t* p: one body
//                                                    for an fp32 output and for a bf16 one (the
//                                                    activations only bf16 products read)
//
// The N variants touch only the first n (0..kLanes) elements. A .cc file brings these names into
// the ISA namespaces of foreach_isa.inc by including half_simd_isa.inc before it includes the
// body (see cast_cpu.cc).
//
// Every ISA gives bitwise the same results, the x86 F16C conversions' results, which
// cast_test checks against an IEEE reference:
//   - fp32 -> bf16: round to nearest even on the bit pattern, including subnormals; overflow gives
//     ±inf. NaN keeps its sign and top payload bits and gets the quiet bit. AVX512_BF16's
//     VCVTNEPS2BF16 is not used: it flushes subnormal inputs to zero, which no other path does.
//   - fp32 -> fp16: IEEE round to nearest even with fp16 subnormals; |x| >= 65520 gives ±inf; NaN
//     is quieted keeping its top 10 payload bits (what VCVTPS2PH does). The AVX-512 build uses
//     that instruction (part of AVX512F); the AVX2 build emulates it with integer operations
//     rather than require F16C, which the AVX2 build does not check for.
//   - widening is exact; an fp16 signalling NaN comes back quieted, as VCVTPH2PS does, while bf16
//     widening is a plain shift (the same bits).
// None of the conversions read the MXCSR rounding mode or depend on FTZ/DAZ.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/cast/cast.h"
#include "kernels/common/simd.h"

// ---------------------------------------------------------------------------------------------
// Scalar: the bit-level definitions, one element at a time.
namespace dstrain::kernels::half_simd::scalar {

using ::dstrain::kernels::simd::scalar::Vd;
using ::dstrain::kernels::simd::scalar::Vf;

inline uint32_t FloatBits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

inline float BitsFloat(uint32_t b) {
  float x;
  std::memcpy(&x, &b, sizeof(x));
  return x;
}

// bf16 is the top half of an fp32: add just under half of the dropped 16 bits, plus one when the
// kept part is odd, so that a tie carries only into an odd value. A carry out of the mantissa
// moves to the next binade, and past the largest finite value to inf, as rounding requires.
inline uint16_t Bf16FromFloatBits(uint32_t b) {
  if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);  // NaN
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

inline uint32_t FloatBitsFromBf16(uint16_t h) { return uint32_t{h} << 16; }

inline uint16_t F16FromFloatBits(uint32_t b) {
  const uint32_t sign = (b >> 16) & 0x8000u;
  const uint32_t a = b & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // |x| >= 65520: inf
  if (a >= 0x38800000u) {
    // |x| >= 2^-14, an fp16 normal: round away 13 mantissa bits as for bf16, then rebias the
    // exponent from 127 to 15 (a carry into the exponent field is still right).
    const uint32_t rounded = (a + 0xfffu + ((a >> 13) & 1u)) >> 13;
    return static_cast<uint16_t>(sign | (rounded - ((127u - 15u) << 10)));
  }
  // An fp16 subnormal counts units of 2^-24: |x| / 2^-24 = mant · 2^(e − 126), so shift the
  // 24-bit significand right by 126 − e and round the remainder half to even. Shifts past 25
  // leave 0 with a remainder below half, like 25 itself; the result 0x400 is the smallest normal.
  const uint32_t e = a >> 23;
  const uint32_t shift = 126u - e < 25u ? 126u - e : 25u;
  const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
  uint32_t q = mant >> shift;
  const uint32_t rem = mant - (q << shift);
  const uint32_t half = 1u << (shift - 1);
  if (rem + (q & 1u) > half) ++q;  // above half, or exactly half with q odd
  return static_cast<uint16_t>(sign | q);
}

inline uint32_t FloatBitsFromF16(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t a = h & 0x7fffu;
  if (a >= 0x7c00u) {  // inf, or NaN made quiet
    return sign | 0x7f800000u | ((a & 0x3ffu) << 13) | (a > 0x7c00u ? 0x400000u : 0u);
  }
  if (a >= 0x400u) return sign | ((a << 13) + ((127u - 15u) << 23));
  // Subnormal or zero: a · 2^-24, exact in fp32 (a < 2^10, a power-of-two scale).
  return sign | FloatBits(static_cast<float>(a) * 0x1p-24f);
}

template <DType kType>
inline float HalfToFloatValue(uint16_t h) {
  return BitsFloat(kType == DType::kBF16 ? FloatBitsFromBf16(h) : FloatBitsFromF16(h));
}

template <DType kType>
inline uint16_t FloatToHalfValue(float x) {
  return kType == DType::kBF16 ? Bf16FromFloatBits(FloatBits(x)) : F16FromFloatBits(FloatBits(x));
}

template <DType kType>
DT_SIMD_INLINE Vf LoadHalf(const uint16_t* p) {
  return {HalfToFloatValue<kType>(*p)};
}
template <DType kType>
DT_SIMD_INLINE Vf LoadHalfN(const uint16_t* p, int n) {
  return {n > 0 ? HalfToFloatValue<kType>(*p) : 0.f};
}
template <DType kType>
DT_SIMD_INLINE void StoreHalf(uint16_t* p, Vf x) {
  *p = FloatToHalfValue<kType>(x.v);
}
template <DType kType>
DT_SIMD_INLINE void StoreHalfN(uint16_t* p, Vf x, int n) {
  if (n > 0) *p = FloatToHalfValue<kType>(x.v);
}
template <DType kType>
DT_SIMD_INLINE void StreamHalf(uint16_t* p, Vf x) {
  StoreHalf<kType>(p, x);
}
// One lane: AccumulateSquares keeps it in lo.
DT_SIMD_INLINE void StoreSquareSums(double* out, Vd lo, Vd /*hi*/) { out[0] = lo.v; }

// A kernel's output in fp32, or rounded to bf16 (see the list at the top).
DT_SIMD_INLINE void StoreTo(float* p, Vf x) { ::dstrain::kernels::simd::scalar::Store(p, x); }
DT_SIMD_INLINE void StoreTo(uint16_t* p, Vf x) { StoreHalf<DType::kBF16>(p, x); }
DT_SIMD_INLINE void StoreToN(float* p, Vf x, int n) {
  ::dstrain::kernels::simd::scalar::StoreN(p, x, n);
}
DT_SIMD_INLINE void StoreToN(uint16_t* p, Vf x, int n) { StoreHalfN<DType::kBF16>(p, x, n); }

}  // namespace dstrain::kernels::half_simd::scalar

#if DT_SIMD_X86
// ---------------------------------------------------------------------------------------------
// AVX2: the scalar definitions above, eight lanes at a time in 32-bit integer lanes.
DT_SIMD_BEGIN_AVX2
namespace dstrain::kernels::half_simd::avx2 {

using ::dstrain::kernels::simd::avx2::kLanes;
using ::dstrain::kernels::simd::avx2::Vd;
using ::dstrain::kernels::simd::avx2::Vf;

DT_SIMD_INLINE __m256i Int(uint32_t x) { return _mm256_set1_epi32(static_cast<int32_t>(x)); }

// Lanes where a > x, for a and x in [0, 2^31).
DT_SIMD_INLINE __m256i Above(__m256i a, uint32_t x) { return _mm256_cmpgt_epi32(a, Int(x)); }

DT_SIMD_INLINE __m256i Select(__m256i mask, __m256i if_set, __m256i if_clear) {
  return _mm256_blendv_epi8(if_clear, if_set, mask);
}

DT_SIMD_INLINE __m256i Bf16Bits(Vf x) {
  const __m256i b = _mm256_castps_si256(x.v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(b, 16), Int(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(odd, Int(0x7fff))), 16);
  const __m256i nan = _mm256_or_si256(_mm256_srli_epi32(b, 16), Int(0x40));
  return Select(Above(_mm256_and_si256(b, Int(0x7fffffff)), 0x7f800000), nan, rounded);
}

DT_SIMD_INLINE __m256i F16Bits(Vf x) {
  const __m256i b = _mm256_castps_si256(x.v);
  const __m256i a = _mm256_and_si256(b, Int(0x7fffffff));
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(b, 16), Int(0x8000));
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(a, 13), Int(1));
  const __m256i normal = _mm256_sub_epi32(
      _mm256_srli_epi32(_mm256_add_epi32(a, _mm256_add_epi32(odd, Int(0xfff))), 13),
      Int((127 - 15) << 10));
  // Shift counts are garbage (even negative) in lanes that are not subnormal; Select drops them.
  const __m256i shift =
      _mm256_min_epi32(_mm256_sub_epi32(Int(126), _mm256_srli_epi32(a, 23)), Int(25));
  const __m256i mant = _mm256_or_si256(_mm256_and_si256(a, Int(0x7fffff)), Int(0x800000));
  __m256i q = _mm256_srlv_epi32(mant, shift);
  const __m256i rem = _mm256_sub_epi32(mant, _mm256_sllv_epi32(q, shift));
  const __m256i half = _mm256_sllv_epi32(Int(1), _mm256_sub_epi32(shift, Int(1)));
  const __m256i up = _mm256_cmpgt_epi32(_mm256_add_epi32(rem, _mm256_and_si256(q, Int(1))), half);
  q = _mm256_sub_epi32(q, up);  // up is -1 where rounding up
  const __m256i nan =
      _mm256_or_si256(Int(0x7e00), _mm256_and_si256(_mm256_srli_epi32(a, 13), Int(0x3ff)));
  __m256i r = Select(Above(a, 0x387fffff), normal, q);
  r = Select(Above(a, 0x477fefff), Int(0x7c00), r);
  r = Select(Above(a, 0x7f800000), nan, r);
  return _mm256_or_si256(r, sign);
}

DT_SIMD_INLINE Vf FromF16Bits(__m256i h) {
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(h, Int(0x8000)), 16);
  const __m256i a = _mm256_and_si256(h, Int(0x7fff));
  const __m256i normal = _mm256_add_epi32(_mm256_slli_epi32(a, 13), Int((127 - 15) << 23));
  const __m256i subnormal =
      _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(a), _mm256_set1_ps(0x1p-24f)));
  const __m256i special = _mm256_or_si256(
      _mm256_or_si256(Int(0x7f800000), _mm256_slli_epi32(_mm256_and_si256(a, Int(0x3ff)), 13)),
      _mm256_and_si256(Above(a, 0x7c00), Int(0x400000)));
  __m256i r = Select(Above(a, 0x3ff), normal, subnormal);
  r = Select(Above(a, 0x7bff), special, r);
  return {_mm256_castsi256_ps(_mm256_or_si256(r, sign))};
}

// Eight 16-bit values from eight 32-bit lanes holding values below 2^16.
DT_SIMD_INLINE __m128i Narrow(__m256i r) {
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

template <DType kType>
DT_SIMD_INLINE Vf LoadHalf(const uint16_t* p) {
  const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  if constexpr (kType == DType::kBF16) {
    return {_mm256_castsi256_ps(_mm256_slli_epi32(h, 16))};
  } else {
    return FromF16Bits(h);
  }
}

template <DType kType>
DT_SIMD_INLINE void StoreHalf(uint16_t* p, Vf x) {
  const __m256i r = kType == DType::kBF16 ? Bf16Bits(x) : F16Bits(x);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), Narrow(r));
}

template <DType kType>
DT_SIMD_INLINE void StreamHalf(uint16_t* p, Vf x) {
  const __m256i r = kType == DType::kBF16 ? Bf16Bits(x) : F16Bits(x);
  _mm_stream_si128(reinterpret_cast<__m128i*>(p), Narrow(r));
}

// AVX2 has no 16-bit masked loads and stores: partial vectors go through a small buffer.
template <DType kType>
DT_SIMD_INLINE Vf LoadHalfN(const uint16_t* p, int n) {
  uint16_t buf[kLanes] = {};
  std::memcpy(buf, p, sizeof(uint16_t) * n);
  return LoadHalf<kType>(buf);
}

template <DType kType>
DT_SIMD_INLINE void StoreHalfN(uint16_t* p, Vf x, int n) {
  uint16_t buf[kLanes];
  StoreHalf<kType>(buf, x);
  std::memcpy(p, buf, sizeof(uint16_t) * n);
}

// AccumulateSquares keeps lanes 0-3 in lo and 4-7 in hi.
DT_SIMD_INLINE void StoreSquareSums(double* out, Vd lo, Vd hi) {
  _mm256_storeu_pd(out, lo.v);
  _mm256_storeu_pd(out + 4, hi.v);
}

// A kernel's output in fp32, or rounded to bf16 (see the list at the top).
DT_SIMD_INLINE void StoreTo(float* p, Vf x) { ::dstrain::kernels::simd::avx2::Store(p, x); }
DT_SIMD_INLINE void StoreTo(uint16_t* p, Vf x) { StoreHalf<DType::kBF16>(p, x); }
DT_SIMD_INLINE void StoreToN(float* p, Vf x, int n) {
  ::dstrain::kernels::simd::avx2::StoreN(p, x, n);
}
DT_SIMD_INLINE void StoreToN(uint16_t* p, Vf x, int n) { StoreHalfN<DType::kBF16>(p, x, n); }

}  // namespace dstrain::kernels::half_simd::avx2
DT_SIMD_END

// ---------------------------------------------------------------------------------------------
// AVX-512: fp16 with the AVX512F conversion instructions, bf16 on the bit pattern as above.
DT_SIMD_BEGIN_AVX512
namespace dstrain::kernels::half_simd::avx512 {

using ::dstrain::kernels::simd::avx512::kLanes;
using ::dstrain::kernels::simd::avx512::MaskN;
using ::dstrain::kernels::simd::avx512::Vd;
using ::dstrain::kernels::simd::avx512::Vf;

// Explicit rounding: VCVTPS2PH then ignores MXCSR.
inline constexpr int kF16Rounding = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

DT_SIMD_INLINE __m512i Bf16Bits(Vf x) {
  const __m512i b = _mm512_castps_si512(x.v);
  const __m512i high = _mm512_srli_epi32(b, 16);
  const __m512i odd = _mm512_and_si512(high, _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(x.v, x.v, _CMP_UNORD_Q);
  return _mm512_mask_or_epi32(rounded, nan, high, _mm512_set1_epi32(0x40));
}

DT_SIMD_INLINE Vf FromHalfBits(__m256i h, DType type) {
  if (type == DType::kBF16) {
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))};
  }
  return {_mm512_cvtph_ps(h)};
}

template <DType kType>
DT_SIMD_INLINE Vf LoadHalf(const uint16_t* p) {
  return FromHalfBits(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), kType);
}

template <DType kType>
DT_SIMD_INLINE Vf LoadHalfN(const uint16_t* p, int n) {
  return FromHalfBits(_mm256_maskz_loadu_epi16(MaskN(n), p), kType);
}

template <DType kType>
DT_SIMD_INLINE void StoreHalf(uint16_t* p, Vf x) {
  auto* out = reinterpret_cast<__m256i*>(p);
  if constexpr (kType == DType::kBF16) {
    _mm256_storeu_si256(out, _mm512_cvtepi32_epi16(Bf16Bits(x)));
  } else {
    _mm256_storeu_si256(out, _mm512_cvtps_ph(x.v, kF16Rounding));
  }
}

template <DType kType>
DT_SIMD_INLINE void StreamHalf(uint16_t* p, Vf x) {
  auto* out = reinterpret_cast<__m256i*>(p);
  if constexpr (kType == DType::kBF16) {
    _mm256_stream_si256(out, _mm512_cvtepi32_epi16(Bf16Bits(x)));
  } else {
    _mm256_stream_si256(out, _mm512_cvtps_ph(x.v, kF16Rounding));
  }
}

template <DType kType>
DT_SIMD_INLINE void StoreHalfN(uint16_t* p, Vf x, int n) {
  if constexpr (kType == DType::kBF16) {
    _mm512_mask_cvtepi32_storeu_epi16(p, MaskN(n), Bf16Bits(x));
  } else {
    _mm256_mask_storeu_epi16(p, MaskN(n), _mm512_cvtps_ph(x.v, kF16Rounding));
  }
}

// AccumulateSquares keeps lanes 0-7 in lo and 8-15 in hi.
DT_SIMD_INLINE void StoreSquareSums(double* out, Vd lo, Vd hi) {
  _mm512_storeu_pd(out, lo.v);
  _mm512_storeu_pd(out + 8, hi.v);
}

// A kernel's output in fp32, or rounded to bf16 (see the list at the top).
DT_SIMD_INLINE void StoreTo(float* p, Vf x) { ::dstrain::kernels::simd::avx512::Store(p, x); }
DT_SIMD_INLINE void StoreTo(uint16_t* p, Vf x) { StoreHalf<DType::kBF16>(p, x); }
DT_SIMD_INLINE void StoreToN(float* p, Vf x, int n) {
  ::dstrain::kernels::simd::avx512::StoreN(p, x, n);
}
DT_SIMD_INLINE void StoreToN(uint16_t* p, Vf x, int n) { StoreHalfN<DType::kBF16>(p, x, n); }

}  // namespace dstrain::kernels::half_simd::avx512
DT_SIMD_END
#endif  // DT_SIMD_X86
