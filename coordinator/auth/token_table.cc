#include "coordinator/auth/token_table.h"

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/crypto/hmac.h"
#include "common/limits/limits.h"

namespace dstrain::coordinator {

bool IsValidPrincipal(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                    c == '@' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<TokenTable> TokenTable::Parse(absl::string_view text, absl::string_view source) {
  TokenTable table;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(source, ":", line_number, ": ", what));
    };
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (fields.size() != 3) return error("expected: SHA256-HEX PRINCIPAL ROLES");
    const absl::string_view hex = fields[0];
    if (hex.size() != 64 || !std::all_of(hex.begin(), hex.end(), [](char c) {
          return absl::ascii_isxdigit(static_cast<unsigned char>(c));
        })) {
      return error("the first field must be the token's SHA-256 as 64 hex digits");
    }
    if (!IsValidPrincipal(fields[1])) {
      return error(
          absl::StrCat("principal '", fields[1], "' must be 1 to 64 characters of [a-z0-9._@-]"));
    }
    absl::StatusOr<uint32_t> roles = ParseRoles(fields[2]);
    if (!roles.ok()) return error(roles.status().message());
    const std::string hash = absl::HexStringToBytes(absl::AsciiStrToLower(hex));
    if (!table.by_hash_.emplace(hash, Entry{std::string(fields[1]), *roles}).second) {
      return error("this token hash is listed twice");
    }
  }
  if (table.by_hash_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": no token in the file"));
  }
  return table;
}

absl::StatusOr<TokenTable> TokenTable::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--tokens ", path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().size() > limits::kMaxTokenFileBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("--tokens ", path, ": over the limit of ",
                                                     limits::kMaxTokenFileBytes,
                                                     " bytes (kMaxTokenFileBytes)"));
  }
  return Parse(text.str(), path);
}

const TokenTable::Entry* TokenTable::Find(absl::string_view token) const {
  auto it = by_hash_.find(crypto::Sha256(token));
  return it == by_hash_.end() ? nullptr : &it->second;
}

std::string TokenFileLine(absl::string_view token, absl::string_view principal, uint32_t roles) {
  return absl::StrCat(absl::BytesToHexString(crypto::Sha256(token)), " ", principal, " ",
                      RoleNames(roles));
}

}  // namespace dstrain::coordinator
