#include "coordinator/store/store_credentials.h"

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/crypto/hmac.h"

namespace dstrain::coordinator {
namespace {

// "jobs/<job_id>/attempt-<n>" with a non-empty id and n >= 1.
bool IsAttemptScope(absl::string_view scope) {
  const std::vector<absl::string_view> parts = absl::StrSplit(scope, '/');
  int attempt = 0;
  return parts.size() == 3 && parts[0] == "jobs" && !parts[1].empty() &&
         absl::StartsWith(parts[2], "attempt-") && absl::SimpleAtoi(parts[2].substr(8), &attempt) &&
         attempt >= 1;
}

}  // namespace

std::string StoreCredentials::ScopeOf(absl::string_view job_id, int attempt) {
  return absl::StrCat("jobs/", job_id, "/attempt-", attempt);
}

std::string StoreCredentials::TokenFor(absl::string_view scope) const {
  return absl::BytesToHexString(crypto::HmacSha256(secret_, scope));
}

absl::Status StoreCredentials::Check(absl::string_view scope, absl::string_view token) const {
  if (!IsAttemptScope(scope)) {
    return absl::UnauthenticatedError(
        absl::StrCat("store scope \"", absl::CHexEscape(scope.substr(0, 200)),
                     "\" is not an attempt's prefix (jobs/<job_id>/attempt-<n>)"));
  }
  if (!crypto::ConstantTimeEquals(TokenFor(scope), token)) {
    return absl::UnauthenticatedError(absl::StrCat("no valid store token for \"", scope, "\""));
  }
  return absl::OkStatus();
}

bool StoreCredentials::InScope(absl::string_view scope, absl::string_view key) {
  return key.size() > scope.size() + 1 && absl::StartsWith(key, scope) && key[scope.size()] == '/';
}

}  // namespace dstrain::coordinator
