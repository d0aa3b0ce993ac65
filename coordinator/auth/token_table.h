// The coordinator's bearer tokens (--tokens FILE; docs/security.md, "Tokens"): which principal
// and roles each token stands for. The file holds SHA-256 hashes, never tokens, so reading it
// does not let anyone call the coordinator:
//
//   # sha256(token), hex              principal   roles
//   9f86d081884c7d659a2feaa0c55ad015... alice       submitter
//   60303ae22b998861bce3b28f33eec1be... ops         admin
//   fd61a03af4f77d870fc21e05e7e80678... grafana     viewer
//
// One entry per line: 64 hex digits, a principal of 1 to 64 characters of [a-z0-9._@-], and
// roles separated by commas (viewer, submitter, admin); blank lines and lines starting with '#'
// are ignored. `dstrain token PRINCIPAL ROLES` makes a token and prints its line.
//
// Thread safety: immutable after Parse/Load.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "coordinator/auth/caller.h"

namespace dstrain::coordinator {

class TokenTable {
 public:
  struct Entry {
    std::string principal;
    uint32_t roles = 0;
  };

  // INVALID_ARGUMENT naming `source` and the line for a malformed entry, a repeated hash, or no
  // entry at all (a coordinator nobody can call is a mistake, not a configuration).
  static absl::StatusOr<TokenTable> Parse(absl::string_view text, absl::string_view source);
  // NOT_FOUND when the file cannot be read; RESOURCE_EXHAUSTED when it is over kMaxTokenFileBytes;
  // Parse's errors.
  static absl::StatusOr<TokenTable> Load(const std::string& path);

  // The entry of a presented token, or null.
  const Entry* Find(absl::string_view token) const;

  size_t size() const { return by_hash_.size(); }

 private:
  std::map<std::string, Entry> by_hash_;  // raw 32-byte SHA-256 → entry
};

// The line a token file needs for `token`.
std::string TokenFileLine(absl::string_view token, absl::string_view principal, uint32_t roles);

// True for 1 to 64 characters of [a-z0-9._@-].
bool IsValidPrincipal(absl::string_view name);

}  // namespace dstrain::coordinator
