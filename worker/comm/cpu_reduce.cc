#include "worker/comm/cpu_reduce.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace dstrain::comm {
namespace {

// Elements converted per block on the stack where a conversion needs a temporary.
constexpr int64_t kBlock = 2048;

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// NaN-propagating maximum: NaN if either side is NaN.
inline float MaxF32(float a, float b) { return (a > b || a != a) ? a : b; }

// F16C: 8 elements per instruction; the tail goes through the portable code.
__attribute__((target("avx,f16c"))) void F16ToF32F16c(const uint16_t* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  internal::F16ToF32Portable(src + i, n - i, dst + i);
}

__attribute__((target("avx,f16c"))) void F32ToF16F16c(const float* src, int64_t n, uint16_t* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 f = _mm256_loadu_ps(src + i);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  internal::F32ToF16Portable(src + i, n - i, dst + i);
}

// AVX2: bf16 <-> f32 8 elements at a time, the same bits as the scalar code.
__attribute__((target("avx2"))) void Bf16ToF32Avx2(const uint16_t* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), u);
  }
  for (; i < n; ++i) dst[i] = Bf16ToF32(src[i]);
}

__attribute__((target("avx2"))) __m128i F32ToBf16x8(__m256i x) {
  const __m256i abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
  const __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);
  // Pack 8 x u32 (each < 2^16) into 8 x u16; packus works per 128-bit lane, so fix the order.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xd8);
  return _mm256_castsi256_si128(packed);
}

__attribute__((target("avx2"))) void F32ToBf16Avx2(const float* src, int64_t n, uint16_t* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), F32ToBf16x8(x));
  }
  for (; i < n; ++i) dst[i] = F32ToBf16(src[i]);
}

bool HasAvx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
  }();
  return has;
}

void Bf16ToF32Bulk(const uint16_t* src, int64_t n, float* dst) {
  if (HasAvx2()) {
    Bf16ToF32Avx2(src, n, dst);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToF32(src[i]);
  }
}

void F32ToBf16Bulk(const float* src, int64_t n, uint16_t* dst) {
  if (HasAvx2()) {
    F32ToBf16Avx2(src, n, dst);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = F32ToBf16(src[i]);
  }
}

void F16ToF32Bulk(const uint16_t* src, int64_t n, float* dst) {
  if (internal::HasF16c()) {
    F16ToF32F16c(src, n, dst);
  } else {
    internal::F16ToF32Portable(src, n, dst);
  }
}

void F32ToF16Bulk(const float* src, int64_t n, uint16_t* dst) {
  if (internal::HasF16c()) {
    F32ToF16F16c(src, n, dst);
  } else {
    internal::F32ToF16Portable(src, n, dst);
  }
}

void AccumulatePlain(float* acc, const float* x, int64_t n, ReduceOp op) {
  if (op == ReduceOp::kMax) {
    for (int64_t i = 0; i < n; ++i) acc[i] = MaxF32(acc[i], x[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
  }
}

}  // namespace

namespace internal {

bool HasAvx2() { return ::dstrain::comm::HasAvx2(); }

void F32ToBf16Portable(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F32ToBf16(src[i]);
}

bool HasF16c() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  }();
  return has;
}

void F16ToF32Portable(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(src[i]);
}

void F32ToF16Portable(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F32ToF16(src[i]);
}

}  // namespace internal

float Bf16ToF32(uint16_t h) { return FromBits(static_cast<uint32_t>(h) << 16); }

uint16_t F32ToBf16(float f) {
  const uint32_t u = Bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    // NaN: keep sign and the top payload bits, set the quiet bit so truncation cannot make Inf.
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  }
  // Round to nearest even on the 16 dropped bits; a carry out of the mantissa bumps the exponent,
  // which is right (up to Inf for the largest finite values).
  const uint32_t lsb = (u >> 16) & 1u;
  return static_cast<uint16_t>((u + 0x7fffu + lsb) >> 16);
}

float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) {
    if (man == 0) return FromBits(sign | 0x7f800000u);  // Inf
    return FromBits(sign | 0x7fc00000u | (man << 13));  // NaN, made quiet
  }
  if (exp == 0) {
    // Zero or subnormal: man * 2^-24, exact in f32.
    const float magnitude = static_cast<float>(man) * 0x1p-24f;
    return FromBits(sign | Bits(magnitude));
  }
  // Normal: rebias the exponent from 15 to 127.
  return FromBits(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t F32ToF16(float f) {
  const uint32_t u = Bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) {
    return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // quiet NaN
  }
  if (a >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65536 (or Inf): Inf
  const uint32_t exp = a >> 23;
  if (exp >= 113) {
    // Normal in f16 (>= 2^-14): drop 13 mantissa bits, round to nearest even. A carry rolls into
    // the exponent, up to Inf for [65520, 65536).
    uint32_t h = (a - (112u << 23)) >> 13;
    const uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  if (exp < 102) return sign;  // below 2^-25: rounds to zero (2^-25 itself is a tie, to even 0)
  // Subnormal in f16: the result is round(value / 2^-24) with value = m * 2^(exp - 150).
  const uint32_t m = (a & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - exp;  // 14..24
  uint32_t h = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u))) ++h;  // may become 0x400, the smallest normal
  return static_cast<uint16_t>(sign | h);
}

bool IsReducible(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

void ToF32(const void* src, DType dtype, int64_t n, float* dst) {
  switch (dtype) {
    case DType::kF32:
      if (src != dst && n > 0) std::memmove(dst, src, n * sizeof(float));
      return;
    case DType::kBF16:
      Bf16ToF32Bulk(static_cast<const uint16_t*>(src), n, dst);
      return;
    case DType::kF16:
      F16ToF32Bulk(static_cast<const uint16_t*>(src), n, dst);
      return;
    default:
      return;
  }
}

void FromF32(const float* src, int64_t n, DType dtype, void* dst) {
  switch (dtype) {
    case DType::kF32:
      if (src != dst && n > 0) std::memmove(dst, src, n * sizeof(float));
      return;
    case DType::kBF16:
      F32ToBf16Bulk(src, n, static_cast<uint16_t*>(dst));
      return;
    case DType::kF16:
      F32ToF16Bulk(src, n, static_cast<uint16_t*>(dst));
      return;
    default:
      return;
  }
}

void AccumulateF32(float* acc, const void* x, DType dtype, int64_t n, ReduceOp op) {
  switch (dtype) {
    case DType::kF32:
      AccumulatePlain(acc, static_cast<const float*>(x), n, op);
      return;
    case DType::kBF16:
    case DType::kF16: {
      const uint16_t* s = static_cast<const uint16_t*>(x);
      float tmp[kBlock];
      for (int64_t i = 0; i < n; i += kBlock) {
        const int64_t m = std::min(kBlock, n - i);
        if (dtype == DType::kBF16) {
          Bf16ToF32Bulk(s + i, m, tmp);
        } else {
          F16ToF32Bulk(s + i, m, tmp);
        }
        AccumulatePlain(acc + i, tmp, m, op);
      }
      return;
    }
    default:
      return;
  }
}

void FinishF32(float* acc, int64_t n, ReduceOp op, int world_size) {
  if (op != ReduceOp::kAvg || world_size == 1) return;
  const float divisor = static_cast<float>(world_size);
  for (int64_t i = 0; i < n; ++i) acc[i] /= divisor;
}

void ReduceInto(void* acc, const void* x, int64_t n, DType dtype, ReduceOp op) {
  if (dtype == DType::kF32) {
    AccumulatePlain(static_cast<float*>(acc), static_cast<const float*>(x), n, op);
    return;
  }
  const size_t esize = DTypeSize(dtype);
  float tmp[kBlock];
  for (int64_t i = 0; i < n; i += kBlock) {
    const int64_t m = std::min(kBlock, n - i);
    void* a = static_cast<char*>(acc) + i * esize;
    ToF32(a, dtype, m, tmp);
    AccumulateF32(tmp, static_cast<const char*>(x) + i * esize, dtype, m, op);
    FromF32(tmp, m, dtype, a);
  }
}

namespace {

// The portable ReduceBuffers over elements [begin, n): each block of every input reduced into f32
// on the stack, then rounded once into `out`.
void ReduceBlocks(const void* const* inputs, int k, void* out, int64_t begin, int64_t n,
                  DType dtype, ReduceOp op) {
  const size_t esize = DTypeSize(dtype);
  float tmp[kBlock];
  for (int64_t i = begin; i < n; i += kBlock) {
    const int64_t len = std::min(kBlock, n - i);
    const int64_t offset = i * static_cast<int64_t>(esize);
    ToF32(static_cast<const char*>(inputs[0]) + offset, dtype, len, tmp);
    for (int j = 1; j < k; ++j) {
      AccumulateF32(tmp, static_cast<const char*>(inputs[j]) + offset, dtype, len, op);
    }
    FinishF32(tmp, len, op, k);
    FromF32(tmp, len, dtype, static_cast<char*>(out) + offset);
  }
}

// Eight elements of `dtype` at `p` as f32, and back (rounded as FromF32 rounds).
template <DType kDType>
__attribute__((target("avx2,f16c"))) inline __m256 Load8(const void* p) {
  if constexpr (kDType == DType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(p));
  } else {
    const __m128i h = _mm_loadu_si128(static_cast<const __m128i*>(p));
    if constexpr (kDType == DType::kBF16) {
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    } else {
      return _mm256_cvtph_ps(h);
    }
  }
}

template <DType kDType>
__attribute__((target("avx2,f16c"))) inline void Store8(void* p, __m256 x) {
  if constexpr (kDType == DType::kF32) {
    _mm256_storeu_ps(static_cast<float*>(p), x);
  } else if constexpr (kDType == DType::kBF16) {
    _mm_storeu_si128(static_cast<__m128i*>(p), F32ToBf16x8(_mm256_castps_si256(x)));
  } else {
    _mm_storeu_si128(static_cast<__m128i*>(p),
                     _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
}

// MaxF32 on eight lanes: a where a > b or a is NaN, else b.
__attribute__((target("avx2"))) inline __m256 Max8(__m256 a, __m256 b) {
  const __m256 take_a =
      _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ), _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  return _mm256_blendv_ps(b, a, take_a);
}

// ReduceBuffers eight elements at a time, each loaded from every input, reduced in registers and
// stored once; ReduceBlocks instead copied the first input to the stack, added each other input
// there and copied the result out, which held the shared-memory all-reduce to half of memcpy's
// speed. The same operations in the same order, so the same bits; the tail (n % 8) goes through
// ReduceBlocks.
template <DType kDType>
__attribute__((target("avx2,f16c"))) void ReduceVectors(const void* const* inputs, int k, void* out,
                                                        int64_t n, ReduceOp op) {
  constexpr int64_t kEsize = kDType == DType::kF32 ? 4 : 2;
  const __m256 divisor = _mm256_set1_ps(static_cast<float>(k));
  const bool divide = op == ReduceOp::kAvg && k > 1;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const int64_t offset = i * kEsize;
    __m256 acc = Load8<kDType>(static_cast<const char*>(inputs[0]) + offset);
    for (int j = 1; j < k; ++j) {
      const __m256 x = Load8<kDType>(static_cast<const char*>(inputs[j]) + offset);
      acc = op == ReduceOp::kMax ? Max8(acc, x) : _mm256_add_ps(acc, x);
    }
    if (divide) acc = _mm256_div_ps(acc, divisor);
    Store8<kDType>(static_cast<char*>(out) + offset, acc);
  }
  ReduceBlocks(inputs, k, out, i, n, kDType, op);
}

}  // namespace

namespace internal {
void ReduceBuffersPortable(const void* const* inputs, int k, void* out, int64_t n, DType dtype,
                           ReduceOp op) {
  ReduceBlocks(inputs, k, out, 0, n, dtype, op);
}
}  // namespace internal

void ReduceBuffers(const void* const* inputs, int k, void* out, int64_t n, DType dtype,
                   ReduceOp op) {
  if (HasAvx2() && internal::HasF16c()) {
    switch (dtype) {
      case DType::kF32:
        return ReduceVectors<DType::kF32>(inputs, k, out, n, op);
      case DType::kBF16:
        return ReduceVectors<DType::kBF16>(inputs, k, out, n, op);
      case DType::kF16:
        return ReduceVectors<DType::kF16>(inputs, k, out, n, op);
      default:
        break;
    }
  }
  ReduceBlocks(inputs, k, out, 0, n, dtype, op);
}

}  // namespace dstrain::comm
