#include "worker/checkpoint/crc32c.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace dstrain::crc32c {
namespace internal {
namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // 0x1EDC6F41 bit-reversed

// table[b] = CRC register after shifting byte b through eight rounds of the polynomial.
constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t r = b;
    for (int i = 0; i < 8; ++i) r = (r >> 1) ^ ((r & 1u) ? kPolynomial : 0u);
    table[b] = r;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kTable = MakeTable();

}  // namespace

uint32_t ExtendPortable(uint32_t crc, const char* data, size_t n) {
  const auto* p = reinterpret_cast<const uint8_t*>(data);
  uint32_t r = ~crc;
  for (size_t i = 0; i < n; ++i) r = (r >> 8) ^ kTable[(r ^ p[i]) & 0xFFu];
  return ~r;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t ExtendSse42(uint32_t crc, const char* data, size_t n) {
  const char* p = data;
  uint64_t r = ~crc;
  // Bytes up to an 8-byte boundary, then whole words (memcpy: no unaligned-access UB), then the
  // tail.
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7u) != 0) {
    r = _mm_crc32_u8(static_cast<uint32_t>(r), static_cast<uint8_t>(*p++));
    --n;
  }
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof(word));
    r = _mm_crc32_u64(r, word);
  }
  for (; n > 0; --n) r = _mm_crc32_u8(static_cast<uint32_t>(r), static_cast<uint8_t>(*p++));
  return ~static_cast<uint32_t>(r);
}

bool HasSse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#else
uint32_t ExtendSse42(uint32_t crc, const char* data, size_t n) {
  return ExtendPortable(crc, data, n);
}
bool HasSse42() { return false; }
#endif

}  // namespace internal

uint32_t Extend(uint32_t crc, const char* data, size_t n) {
  // Decided once; a function pointer keeps the per-call cost to one indirect call.
  static const auto impl =
      internal::HasSse42() ? &internal::ExtendSse42 : &internal::ExtendPortable;
  return impl(crc, data, n);
}

}  // namespace dstrain::crc32c
