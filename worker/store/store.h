// Store: the rendezvous key-value store ranks use to find each other (after c10d's Store).
//
// Gloo's connection setup and NCCL's unique id go through it, so a trainer needs nothing but a
// Store to join its group. Keys are strings, values are bytes. Semantics every backend keeps:
//   - Set overwrites; Get blocks until the key exists or the timeout passes;
//   - Add treats the value as a decimal int64 (absent = 0), adds atomically, returns the result;
//   - CompareSet replaces the value only when it equals `expected` (absent matches an empty
//     expected value) and returns the value now stored ("" when the key stays absent);
//   - Wait blocks until every key exists (an empty list returns at once);
//   - DeleteKey reports whether the key existed.
// Blocking calls return kDeadlineExceeded naming the missing keys and the timeout when the
// timeout passes (a timeout <= 0 checks once without blocking; absl::InfiniteDuration() never
// times out), and kUnavailable when the store cannot be reached. Keys and values may hold any
// bytes, NUL included. Implementations are thread-safe.
// Backends: InMemoryStore (one process, ranks as threads), TcpStore (standalone mode: one rank or
// the launcher serves, others connect), the coordinator's gRPC store (service mode, later), and
// PrefixStore (a decorator scoping keys per job, attempt or group).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace dstrain::store {

class Store {
 public:
  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  virtual absl::Status Set(absl::string_view key, absl::string_view value) = 0;
  virtual absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) = 0;
  virtual absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) = 0;
  virtual absl::StatusOr<std::string> CompareSet(absl::string_view key, absl::string_view expected,
                                                 absl::string_view desired) = 0;
  virtual absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) = 0;
  virtual absl::StatusOr<bool> DeleteKey(absl::string_view key) = 0;

 protected:
  Store() = default;
};

}  // namespace dstrain::store
