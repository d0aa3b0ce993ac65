#include "kernels/attention/bf16_tiles.h"

#include <cstring>

#include "common/status/status_macros.h"
#include "kernels/cast/half_simd.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/simd.h"  // immintrin.h, with GCC 12's warning in it silenced

namespace dstrain::kernels {
namespace {

float Bf16Value(uint16_t h) { return half_simd::scalar::HalfToFloatValue<DType::kBF16>(h); }

void PortableProduct(float* c, int64_t ldc, const uint16_t* a, int64_t lda, const uint16_t* b,
                     int64_t ldb, int m, int n, int k, bool accumulate) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      float acc = accumulate ? c[i * ldc + j] : 0.f;
      for (int k0 = 0; k0 < k; k0 += 32) {  // one tile instruction's 32 products
        // Products of bf16 values are exact in f32, so fused and separate multiply-adds agree.
        float even = 0.f, odd = 0.f;
        for (int kk = k0; kk < k0 + 32; kk += 2) {
          const uint16_t* pair = b + (kk / 2) * ldb + 2 * j;
          even += Bf16Value(a[i * lda + kk]) * Bf16Value(pair[0]);
          odd += Bf16Value(a[i * lda + kk + 1]) * Bf16Value(pair[1]);
        }
        acc += even + odd;
      }
      c[i * ldc + j] = acc;
    }
  }
}

#if defined(__x86_64__)
// The 64-byte tile configuration (palette 1): every tile 16 rows of 64 bytes, i.e. 16 × 16 f32
// for C, 16 × 32 bf16 for A and 16 pair-rows × 16 columns for B.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Tiles 0-3 hold a 32 × 32 block of C, 4-5 two 16-row strips of A, 6-7 two 16-column strips of
// B: four products per two loads of each operand.
__attribute__((target("amx-tile,amx-bf16"))) void AmxProduct(float* c, int64_t ldc,
                                                             const uint16_t* a, int64_t lda,
                                                             const uint16_t* b, int64_t ldb, int m,
                                                             int n, int k, bool accumulate) {
  const int64_t c_stride = ldc * 4, a_stride = lda * 2, b_stride = ldb * 2;
  for (int i = 0; i < m; i += 32) {
    for (int j = 0; j < n; j += 32) {
      float* c0 = c + i * ldc + j;
      float* c1 = c0 + 16 * ldc;
      if (accumulate) {
        _tile_loadd(0, c0, c_stride);
        _tile_loadd(1, c0 + 16, c_stride);
        _tile_loadd(2, c1, c_stride);
        _tile_loadd(3, c1 + 16, c_stride);
      } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      }
      for (int kk = 0; kk < k; kk += 32) {
        _tile_loadd(4, a + i * lda + kk, a_stride);
        _tile_loadd(5, a + (i + 16) * lda + kk, a_stride);
        _tile_loadd(6, b + (kk / 2) * ldb + 2 * j, b_stride);
        _tile_loadd(7, b + (kk / 2) * ldb + 2 * (j + 16), b_stride);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c0, c_stride);
      _tile_stored(1, c0 + 16, c_stride);
      _tile_stored(2, c1, c_stride);
      _tile_stored(3, c1 + 16, c_stride);
    }
  }
}

// 16 × 16 words: 16 row loads, three rounds of shuffles (32-bit, 64-bit, then 128-bit lanes
// twice), 16 row stores.
__attribute__((target("avx512f"), always_inline)) inline void TransposeBlock16(uint32_t* dst,
                                                                               int64_t ldd,
                                                                               const uint32_t* src,
                                                                               int64_t lds) {
  __m512i r[16], t[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(src + i * lds);
#pragma GCC unroll 8
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // Lane L of r[4g + c] now holds column 4L + c of rows 4g .. 4g + 3.
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    t[c] = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x88);           // lanes 0, 2 of rows 0-7
    t[4 + c] = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xdd);       // lanes 1, 3
    t[8 + c] = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x88);  // the same for rows 8-15
    t[12 + c] = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xdd);
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    _mm512_storeu_si512(dst + c * ldd, _mm512_shuffle_i32x4(t[c], t[8 + c], 0x88));
    _mm512_storeu_si512(dst + (8 + c) * ldd, _mm512_shuffle_i32x4(t[c], t[8 + c], 0xdd));
    _mm512_storeu_si512(dst + (4 + c) * ldd, _mm512_shuffle_i32x4(t[4 + c], t[12 + c], 0x88));
    _mm512_storeu_si512(dst + (12 + c) * ldd, _mm512_shuffle_i32x4(t[4 + c], t[12 + c], 0xdd));
  }
}

// Every 16 × 16 block of the first rows × cols (multiples of 16).
__attribute__((target("avx512f"))) void TransposeBlocks(uint32_t* dst, int64_t ldd,
                                                        const uint32_t* src, int64_t lds, int rows,
                                                        int cols) {
  for (int r = 0; r < rows; r += 16) {
    for (int c = 0; c < cols; c += 16) {
      TransposeBlock16(dst + c * ldd + r, ldd, src + r * lds + c, lds);
    }
  }
}

__attribute__((target("avx512f,avx512bw"))) void InterleaveAvx512(uint16_t* dst, int64_t ldd,
                                                                  const uint16_t* src, int64_t lds,
                                                                  int rows, int cols) {
  alignas(64) uint16_t lo[32], hi[32];
  for (int j = 0; j < 16; ++j) {
    lo[2 * j] = static_cast<uint16_t>(j);
    lo[2 * j + 1] = static_cast<uint16_t>(32 + j);
    hi[2 * j] = static_cast<uint16_t>(16 + j);
    hi[2 * j + 1] = static_cast<uint16_t>(48 + j);
  }
  const __m512i index_lo = _mm512_load_si512(lo), index_hi = _mm512_load_si512(hi);
  for (int r = 0; r < rows; r += 2) {
    const uint16_t* even = src + r * lds;
    const uint16_t* odd = even + lds;
    uint16_t* out = dst + (r / 2) * ldd;
    for (int j = 0; j < cols; j += 32) {
      const __m512i e = _mm512_loadu_si512(even + j), o = _mm512_loadu_si512(odd + j);
      _mm512_storeu_si512(out + 2 * j, _mm512_permutex2var_epi16(e, index_lo, o));
      _mm512_storeu_si512(out + 2 * j + 32, _mm512_permutex2var_epi16(e, index_hi, o));
    }
  }
}

__attribute__((target("amx-tile"))) void ConfigureTiles() {
  TileConfig config;
  std::memset(&config, 0, sizeof config);
  config.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    config.colsb[t] = 64;
    config.rows[t] = 16;
  }
  _tile_loadconfig(&config);
}

__attribute__((target("amx-tile"))) void ReleaseTiles() { _tile_release(); }

bool UseAvx512() { return ActiveIsa() == Isa::kAvx512; }

// Whether this thread is inside a TileScope of the AMX route.
thread_local bool tiles_configured = false;
#endif

}  // namespace

TileScope::TileScope(TileRoute route) : route_(route) {
#if defined(__x86_64__)
  if (route_ == TileRoute::kAmx) {
    DT_CHECK(GetCpuFeatures().amx_bf16);  // without the OS's grant the configuration faults
    DT_CHECK(!tiles_configured);          // scopes do not nest
    ConfigureTiles();
    tiles_configured = true;
  }
#endif
}

TileScope::~TileScope() {
#if defined(__x86_64__)
  if (route_ == TileRoute::kAmx) {
    ReleaseTiles();
    tiles_configured = false;
  }
#endif
}

void TransposeWords(void* dst_bytes, int64_t ldd, const void* src_bytes, int64_t lds, int rows,
                    int cols) {
  auto* dst = static_cast<uint32_t*>(dst_bytes);
  const auto* src = static_cast<const uint32_t*>(src_bytes);
  int r0 = 0, c0 = 0;
#if defined(__x86_64__)
  if (UseAvx512()) {
    r0 = rows / 16 * 16;
    c0 = cols / 16 * 16;
    TransposeBlocks(dst, ldd, src, lds, r0, c0);
  }
#endif
  // What the blocks left: the last rows (all columns) and the last columns (the blocks' rows).
  for (int r = 0; r < rows; ++r) {
    for (int c = r < r0 ? c0 : 0; c < cols; ++c) {
      std::memcpy(dst + c * ldd + r, src + r * lds + c, sizeof(uint32_t));  // the words may be f32
    }
  }
}

void InterleaveRowPairs(uint16_t* dst, int64_t ldd, const uint16_t* src, int64_t lds, int rows,
                        int cols) {
  DT_CHECK(rows % 2 == 0 && cols % 32 == 0);
#if defined(__x86_64__)
  if (UseAvx512()) {
    InterleaveAvx512(dst, ldd, src, lds, rows, cols);
    return;
  }
#endif
  for (int r = 0; r < rows; r += 2) {
    for (int j = 0; j < cols; ++j) {
      dst[(r / 2) * ldd + 2 * j] = src[r * lds + j];
      dst[(r / 2) * ldd + 2 * j + 1] = src[(r + 1) * lds + j];
    }
  }
}

void TileProductBf16(TileRoute route, float* c, int64_t ldc, const uint16_t* a, int64_t lda,
                     const uint16_t* b, int64_t ldb, int m, int n, int k, bool accumulate) {
  DT_CHECK(m % 32 == 0 && n % 32 == 0 && k % 32 == 0 && ldb >= 2 * int64_t{n});
#if defined(__x86_64__)
  if (route == TileRoute::kAmx) {
    DT_CHECK(tiles_configured);  // inside a TileScope on this thread
    AmxProduct(c, ldc, a, lda, b, ldb, m, n, k, accumulate);
    return;
  }
#else
  DT_CHECK(route == TileRoute::kPortable);
#endif
  PortableProduct(c, ldc, a, lda, b, ldb, m, n, k, accumulate);
}

}  // namespace dstrain::kernels
