// PrefixStore: a Store decorator that scopes every key under a prefix, so that jobs, restart
// attempts and communicator groups sharing one store cannot see each other's keys.
//
// Every key `k` becomes `prefix + "/" + k` in the base store; decorators nest, so
// PrefixStore("group0", &PrefixStore("job7", &base)) stores "job7/group0/k". Values, timeouts and
// errors pass through unchanged (errors name the full, prefixed key). The prefix is not checked:
// two prefixes are isolated as long as neither is a "/"-separated prefix of the other's keys.
//
// Ownership: the base store is not owned and must outlive the PrefixStore.
// Thread-safety: as thread-safe as the base store (every Store is); the decorator holds no state
// beyond its immutable prefix.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/store/store.h"

namespace dstrain::store {

class PrefixStore final : public Store {
 public:
  // REQUIRES: `base` is not null and outlives this object.
  PrefixStore(std::string prefix, Store* base);
  ~PrefixStore() override = default;

  const std::string& prefix() const { return prefix_; }
  Store* base() const { return base_; }

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::StatusOr<std::string> CompareSet(absl::string_view key, absl::string_view expected,
                                         absl::string_view desired) override;
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) override;
  absl::StatusOr<bool> DeleteKey(absl::string_view key) override;

 private:
  std::string Scoped(absl::string_view key) const;

  const std::string prefix_;
  Store* const base_;
};

}  // namespace dstrain::store
