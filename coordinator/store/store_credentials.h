// Who may touch which rendezvous keys (docs/wire-api.md, "StoreService"). The coordinator gives
// each START assignment a token for its attempt's store prefix ("jobs/<job_id>/attempt-<n>"):
// the hex HMAC-SHA256 of the prefix under a secret only the coordinator holds (table secrets of
// its database, so tokens survive a restart). A StoreService call carries the prefix and the
// token as gRPC metadata (GrpcStore's kScopeMetadata and kTokenMetadata); the service accepts it
// only when the token is the prefix's and every key of the call lies beneath the prefix. So a
// trainer reaches its own attempt's keys and nothing else, and a caller without a token reaches
// none. No per-token state: checking is a MAC.
//
// Thread-safe (immutable after construction).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dstrain::coordinator {

class StoreCredentials {
 public:
  // `secret`: at least 32 bytes (CoordinatorState::Secret).
  explicit StoreCredentials(std::string secret) : secret_(std::move(secret)) {}

  // The prefix of `job_id`'s attempt `attempt`, and its token.
  static std::string ScopeOf(absl::string_view job_id, int attempt);
  std::string TokenFor(absl::string_view scope) const;

  // kUnauthenticated when the scope is not an attempt's prefix or the token is not its.
  absl::Status Check(absl::string_view scope, absl::string_view token) const;
  // Whether `key` lies beneath `scope` ("<scope>/...").
  static bool InScope(absl::string_view scope, absl::string_view key);

 private:
  const std::string secret_;
};

}  // namespace dstrain::coordinator
