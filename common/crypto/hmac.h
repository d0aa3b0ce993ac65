// HMAC-SHA256 (RFC 2104 over SHA-256, through OpenSSL's libcrypto) and a comparison that takes
// the same time wherever two strings differ, for checking a presented MAC.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace dstrain::crypto {

// The 32-byte MAC of `data` under `key`.
std::string HmacSha256(absl::string_view key, absl::string_view data);

// Whether a and b are equal, in time that depends on their lengths only.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace dstrain::crypto
