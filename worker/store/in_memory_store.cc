// InMemoryStore: one map under one mutex; waiters sleep on one condition variable that every
// write wakes. Rendezvous traffic is a few keys per rank, so waking all waiters on each write
// (each re-checks its keys) is cheaper than per-key bookkeeping would be to get right.
#include "worker/store/in_memory_store.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace dstrain::store {
namespace {

// How many missing keys a timeout message lists before it summarises the rest.
constexpr int kMaxKeysInMessage = 8;
// Values longer than this are cut in error messages.
constexpr size_t kMaxValueInMessage = 64;

std::string Quote(absl::string_view bytes) {
  return absl::StrCat("\"", absl::CHexEscape(bytes), "\"");
}

std::string QuoteValue(absl::string_view value) {
  if (value.size() <= kMaxValueInMessage) return Quote(value);
  return absl::StrCat(Quote(value.substr(0, kMaxValueInMessage)), "... (", value.size(), " bytes)");
}

absl::Time DeadlineAfter(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return absl::InfiniteFuture();
  absl::Time now = absl::Now();
  return timeout <= absl::ZeroDuration() ? now : now + timeout;
}

}  // namespace

absl::Status InMemoryStore::CheckOpenLocked() const {
  if (closed_) return absl::UnavailableError("store is closed");
  return absl::OkStatus();
}

absl::Status InMemoryStore::Set(absl::string_view key, absl::string_view value) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckOpenLocked(); !s.ok()) return s;
  data_[key] = std::string(value);
  changed_.SignalAll();
  return absl::OkStatus();
}

absl::StatusOr<std::string> InMemoryStore::Get(absl::string_view key, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  std::vector<absl::string_view> keys = {key};
  if (absl::Status s = AwaitKeysLocked("Get", keys, timeout, DeadlineAfter(timeout),
                                       /*cancelled=*/nullptr, absl::InfiniteDuration());
      !s.ok()) {
    return s;
  }
  return data_.find(key)->second;
}

absl::StatusOr<std::string> InMemoryStore::GetOrCancel(absl::string_view key,
                                                       absl::Duration timeout,
                                                       absl::FunctionRef<bool()> cancelled,
                                                       absl::Duration poll_interval) {
  absl::MutexLock lock(&mu_);
  std::vector<absl::string_view> keys = {key};
  if (absl::Status s =
          AwaitKeysLocked("Get", keys, timeout, DeadlineAfter(timeout), &cancelled, poll_interval);
      !s.ok()) {
    return s;
  }
  return data_.find(key)->second;
}

absl::StatusOr<int64_t> InMemoryStore::Add(absl::string_view key, int64_t delta) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckOpenLocked(); !s.ok()) return s;
  int64_t current = 0;
  auto it = data_.find(key);
  if (it != data_.end() && !absl::SimpleAtoi(it->second, &current)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Add on key ", Quote(key), ": the value is not a decimal int64: ", QuoteValue(it->second)));
  }
  int64_t sum = 0;
  if (__builtin_add_overflow(current, delta, &sum)) {
    return absl::OutOfRangeError(
        absl::StrCat("Add on key ", Quote(key), ": ", current, " + ", delta, " overflows int64"));
  }
  data_[key] = absl::StrCat(sum);
  changed_.SignalAll();
  return sum;
}

absl::StatusOr<std::string> InMemoryStore::CompareSet(absl::string_view key,
                                                      absl::string_view expected,
                                                      absl::string_view desired) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckOpenLocked(); !s.ok()) return s;
  auto it = data_.find(key);
  absl::string_view current = it == data_.end() ? absl::string_view() : it->second;
  if (current != expected) return std::string(current);
  data_[key] = std::string(desired);
  changed_.SignalAll();
  return std::string(desired);
}

absl::Status InMemoryStore::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  std::vector<absl::string_view> views(keys.begin(), keys.end());
  absl::MutexLock lock(&mu_);
  return AwaitKeysLocked("Wait", views, timeout, DeadlineAfter(timeout), /*cancelled=*/nullptr,
                         absl::InfiniteDuration());
}

absl::Status InMemoryStore::WaitOrCancel(const std::vector<std::string>& keys,
                                         absl::Duration timeout,
                                         absl::FunctionRef<bool()> cancelled,
                                         absl::Duration poll_interval) {
  std::vector<absl::string_view> views(keys.begin(), keys.end());
  absl::MutexLock lock(&mu_);
  return AwaitKeysLocked("Wait", views, timeout, DeadlineAfter(timeout), &cancelled, poll_interval);
}

absl::StatusOr<bool> InMemoryStore::DeleteKey(absl::string_view key) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckOpenLocked(); !s.ok()) return s;
  return data_.erase(key) > 0;
}

void InMemoryStore::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
  changed_.SignalAll();
}

int64_t InMemoryStore::NumKeys() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(data_.size());
}

absl::Status InMemoryStore::AwaitKeysLocked(absl::string_view op,
                                            const std::vector<absl::string_view>& keys,
                                            absl::Duration timeout, absl::Time deadline,
                                            const absl::FunctionRef<bool()>* cancelled,
                                            absl::Duration poll_interval) {
  // Keys before `first_missing` are known to exist: keys are never re-checked once seen, so a
  // key deleted while the call waits for others still counts as having arrived (as in c10d).
  size_t first_missing = 0;
  while (true) {
    if (absl::Status s = CheckOpenLocked(); !s.ok()) return s;
    while (first_missing < keys.size() && data_.contains(keys[first_missing])) ++first_missing;
    if (first_missing == keys.size()) return absl::OkStatus();
    if (cancelled != nullptr && (*cancelled)()) {
      return absl::CancelledError(absl::StrCat(op, " cancelled: the caller went away"));
    }
    absl::Time now = absl::Now();
    if (now >= deadline) break;
    absl::Time wake = deadline;
    if (cancelled != nullptr) wake = std::min(deadline, now + poll_interval);
    changed_.WaitWithDeadline(&mu_, wake);
  }

  std::vector<absl::string_view> missing;
  for (size_t i = first_missing; i < keys.size(); ++i) {
    if (!data_.contains(keys[i])) missing.push_back(keys[i]);
  }
  std::string message = absl::StrCat(op, " timed out after ", absl::FormatDuration(timeout));
  if (keys.size() == 1) {
    absl::StrAppend(&message, " waiting for key ", Quote(keys[0]));
    return absl::DeadlineExceededError(message);
  }
  absl::StrAppend(&message, " waiting for ", missing.size(), " of ", keys.size(), " keys: ");
  for (size_t i = 0; i < missing.size() && i < kMaxKeysInMessage; ++i) {
    absl::StrAppend(&message, i == 0 ? "" : ", ", Quote(missing[i]));
  }
  if (missing.size() > kMaxKeysInMessage) {
    absl::StrAppend(&message, ", and ", missing.size() - kMaxKeysInMessage, " more");
  }
  return absl::DeadlineExceededError(message);
}

}  // namespace dstrain::store
