// HMAC-SHA256 (RFC 2104 over SHA-256, through OpenSSL's libcrypto), a comparison that takes
// the same time wherever two strings differ, for checking a presented MAC, SHA-256 itself (the
// coordinator's token file keeps hashes, not tokens) and random bytes from the system's CSPRNG.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dstrain::crypto {

// The 32-byte MAC of `data` under `key`.
std::string HmacSha256(absl::string_view key, absl::string_view data);

// Whether a and b are equal, in time that depends on their lengths only.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// The 32-byte SHA-256 digest of `data`.
std::string Sha256(absl::string_view data);

// `n` bytes from libcrypto's CSPRNG (RAND_bytes); INTERNAL when it has no entropy.
absl::StatusOr<std::string> RandomBytes(size_t n);

}  // namespace dstrain::crypto
