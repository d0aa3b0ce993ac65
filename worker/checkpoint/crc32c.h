// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum every checkpoint shard
// carries in its manifest. Chosen over CRC-32 because x86 has an instruction for it (SSE4.2
// crc32), so checking a multi-gigabyte shard costs far less than reading it.
//
// Values are the standard finalized CRC ("123456789" -> 0xE3069283), and they chain:
//   Extend(Value(a), b) == Value(a + b).
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace dstrain::crc32c {

// The CRC of `crc`'s data followed by `data`; `crc` is 0 for empty data.
uint32_t Extend(uint32_t crc, const char* data, size_t n);
inline uint32_t Extend(uint32_t crc, absl::string_view data) {
  return Extend(crc, data.data(), data.size());
}
inline uint32_t Value(absl::string_view data) { return Extend(0, data); }

namespace internal {
// The two implementations Extend picks between at run time; exposed so tests can compare them.
uint32_t ExtendPortable(uint32_t crc, const char* data, size_t n);
// Requires HasSse42().
uint32_t ExtendSse42(uint32_t crc, const char* data, size_t n);
bool HasSse42();
}  // namespace internal

}  // namespace dstrain::crc32c
