// DurableStore: the rendezvous Store of service mode, kept in memory for its blocking semantics
// and written through to the coordinator's database, so a restarted coordinator gives running
// trainers back every key they set (the `kv` table of docs/service.md, "State in RocksDB").
//
// Reads and blocking waits go to an InMemoryStore. Every mutation takes one mutex, applies the
// change in memory and then writes the key's new value (or its deletion) to the KvLog, so the log
// sees changes in the order they happened. A failed write returns its error to the caller; the
// in-memory value then runs ahead of the log until the key's next successful write.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/store/in_memory_store.h"
#include "worker/store/store.h"

namespace dstrain::coordinator {

// Where DurableStore persists keys (the coordinator's `kv` table). Thread-safe.
class KvLog {
 public:
  virtual ~KvLog() = default;
  virtual absl::Status Put(absl::string_view key, absl::string_view value) = 0;
  virtual absl::Status Delete(absl::string_view key) = 0;
};

class DurableStore final : public store::Store {
 public:
  // `log` must outlive the store. `restored` are the keys a previous coordinator persisted.
  DurableStore(KvLog* log, const std::vector<std::pair<std::string, std::string>>& restored);

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::StatusOr<std::string> CompareSet(absl::string_view key, absl::string_view expected,
                                         absl::string_view desired) override;
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) override;
  absl::StatusOr<bool> DeleteKey(absl::string_view key) override;

  // For the gRPC service: blocking calls that give up when the caller has gone away (see
  // InMemoryStore).
  absl::Status WaitOrCancel(const std::vector<std::string>& keys, absl::Duration timeout,
                            absl::FunctionRef<bool()> cancelled, absl::Duration poll_interval);
  // Wakes every blocked call with kUnavailable (the coordinator is shutting down).
  void Close() { memory_.Close(); }

  int64_t NumKeys() const { return memory_.NumKeys(); }

 private:
  KvLog* const log_;
  store::InMemoryStore memory_;
  absl::Mutex write_mu_;  // orders mutations with their log writes
};

}  // namespace dstrain::coordinator
