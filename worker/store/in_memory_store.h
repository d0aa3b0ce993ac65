// InMemoryStore: the Store for ranks that are threads of one process, and the state behind
// TcpStoreServer.
//
// A hash map under one mutex; blocking calls (Get, Wait) sleep on a condition variable that every
// write signals, and wake at their deadline. Keys and values are arbitrary bytes (NULs included).
//
// Beyond the Store contract (store.h):
//   - A timeout <= 0 checks once and does not block; absl::InfiniteDuration() blocks until the key
//     exists or the store is closed.
//   - Add parses the value with absl::SimpleAtoi: a value that is not a decimal int64 gives
//     kInvalidArgument, a sum that overflows int64 gives kOutOfRange; the value is left unchanged.
//   - CompareSet on an absent key with a non-empty `expected` changes nothing and returns "".
//   - Close() makes every blocked and later call fail with kUnavailable, so that a server fronting
//     the store can shut down without waiting out its clients' timeouts.
//
// Thread-safety: every method may be called concurrently. The store must outlive all calls on it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/store/store.h"

namespace dstrain::store {

class InMemoryStore final : public Store {
 public:
  InMemoryStore() = default;
  ~InMemoryStore() override = default;

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::StatusOr<std::string> CompareSet(absl::string_view key, absl::string_view expected,
                                         absl::string_view desired) override;
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) override;
  absl::StatusOr<bool> DeleteKey(absl::string_view key) override;

  // Get and Wait for a server fronting this store, which must notice when the client that asked
  // has gone away: like Get and Wait, but they also give up with kCancelled once `cancelled()`
  // returns true. While the call blocks, `cancelled` is polled every `poll_interval` with the
  // store's lock held, so it must be cheap and must not call back into the store.
  absl::StatusOr<std::string> GetOrCancel(absl::string_view key, absl::Duration timeout,
                                          absl::FunctionRef<bool()> cancelled,
                                          absl::Duration poll_interval);
  absl::Status WaitOrCancel(const std::vector<std::string>& keys, absl::Duration timeout,
                            absl::FunctionRef<bool()> cancelled, absl::Duration poll_interval);

  // Wakes every blocked Get/Wait with kUnavailable and fails every later call the same way.
  // Idempotent; there is no reopening.
  void Close();

  // Number of keys stored now (for tests and diagnostics).
  int64_t NumKeys() const;

 private:
  // Blocks until every key in `keys` exists, `deadline` passes, the store is closed or
  // `cancelled` (when not null) returns true. `op` and `timeout` only word the error.
  absl::Status AwaitKeysLocked(absl::string_view op, const std::vector<absl::string_view>& keys,
                               absl::Duration timeout, absl::Time deadline,
                               const absl::FunctionRef<bool()>* cancelled,
                               absl::Duration poll_interval) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckOpenLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  absl::CondVar changed_;  // Signalled (all) on every write and on Close().
  absl::flat_hash_map<std::string, std::string> data_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace dstrain::store
