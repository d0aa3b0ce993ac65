#include "worker/comm/gloo/failure_records.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dstrain::comm::gloo_internal {

FailureRecords::FailureRecords(store::Store* store, int rank, int size, absl::Duration grace)
    : store_(store), rank_(rank), size_(size), grace_(grace) {}

std::string FailureRecords::Publish(int64_t seq, absl::string_view reason) {
  if (size_ == 1) return "";
  const std::string prefix = absl::StrCat("fail/", seq, "/");
  absl::Status s = store_->Set(absl::StrCat(prefix, rank_), reason);
  if (s.ok()) s = store_->Add(absl::StrCat(prefix, "count"), 1).status();
  if (!s.ok()) return absl::StrCat("; failure records unavailable (", s.message(), ")");
  return "";
}

std::string FailureRecords::AwaitRecords(int64_t seq, absl::Duration timeout) {
  const absl::Duration grace = std::min(grace_, timeout / 2);
  if (size_ == 1 || grace <= absl::ZeroDuration()) return "";
  const std::string prefix = absl::StrCat("fail/", seq, "/");
  std::vector<std::string> keys;
  for (int r = 0; r < size_; ++r) {
    if (r != rank_) keys.push_back(absl::StrCat(prefix, r));
  }
  if (store_->Wait(keys, grace).ok()) return "; every other rank failed too";
  std::vector<int> missing;
  for (int r = 0; r < size_; ++r) {
    if (r != rank_ && !Record(seq, r).has_value()) missing.push_back(r);
  }
  if (missing.empty()) return "; every other rank failed too";
  return absl::StrCat("; rank(s) [", absl::StrJoin(missing, ", "),
                      "] did not report failing within ", absl::FormatDuration(grace),
                      ": dead, hung or not in this operation");
}

absl::StatusOr<int64_t> FailureRecords::Count(int64_t seq) {
  return store_->Add(absl::StrCat("fail/", seq, "/count"), 0);
}

std::optional<std::string> FailureRecords::Record(int64_t seq, int peer) {
  absl::StatusOr<std::string> why =
      store_->Get(absl::StrCat("fail/", seq, "/", peer), absl::ZeroDuration());
  if (!why.ok()) return std::nullopt;
  return *std::move(why);
}

std::string FailureRecords::PeerFailure(int64_t seq) {
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    if (std::optional<std::string> why = Record(seq, r)) {
      return absl::StrCat("rank ", r, " failed first: ", *why);
    }
  }
  return "a peer failed first";
}

}  // namespace dstrain::comm::gloo_internal
