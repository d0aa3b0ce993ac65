#include "coordinator/store/durable_store.h"

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace dstrain::coordinator {

DurableStore::DurableStore(KvLog* log,
                           const std::vector<std::pair<std::string, std::string>>& restored)
    : log_(log) {
  for (const auto& [key, value] : restored) {
    // An in-memory Set on an open store cannot fail.
    (void)memory_.Set(key, value);
  }
}

absl::Status DurableStore::Set(absl::string_view key, absl::string_view value) {
  absl::MutexLock lock(&write_mu_);
  DT_RETURN_IF_ERROR(memory_.Set(key, value));
  return log_->Put(key, value);
}

absl::StatusOr<std::string> DurableStore::Get(absl::string_view key, absl::Duration timeout) {
  return memory_.Get(key, timeout);
}

absl::StatusOr<int64_t> DurableStore::Add(absl::string_view key, int64_t delta) {
  absl::MutexLock lock(&write_mu_);
  DT_ASSIGN_OR_RETURN(const int64_t value, memory_.Add(key, delta));
  DT_RETURN_IF_ERROR(log_->Put(key, absl::StrCat(value)));
  return value;
}

absl::StatusOr<std::string> DurableStore::CompareSet(absl::string_view key,
                                                     absl::string_view expected,
                                                     absl::string_view desired) {
  absl::MutexLock lock(&write_mu_);
  DT_ASSIGN_OR_RETURN(std::string now, memory_.CompareSet(key, expected, desired));
  // The value equals `desired` exactly when the key now holds it (swapped, or already there);
  // otherwise nothing changed and there is nothing to log.
  if (now == desired) DT_RETURN_IF_ERROR(log_->Put(key, now));
  return now;
}

absl::Status DurableStore::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  return memory_.Wait(keys, timeout);
}

absl::StatusOr<bool> DurableStore::DeleteKey(absl::string_view key) {
  absl::MutexLock lock(&write_mu_);
  DT_ASSIGN_OR_RETURN(const bool deleted, memory_.DeleteKey(key));
  if (deleted) DT_RETURN_IF_ERROR(log_->Delete(key));
  return deleted;
}

absl::Status DurableStore::WaitOrCancel(const std::vector<std::string>& keys,
                                        absl::Duration timeout, absl::FunctionRef<bool()> cancelled,
                                        absl::Duration poll_interval) {
  return memory_.WaitOrCancel(keys, timeout, cancelled, poll_interval);
}

}  // namespace dstrain::coordinator
