// GlooStoreAdapter: presents a dstrain Store as a gloo::rendezvous::Store, so Gloo's connection
// setup (connectFullMesh) rendezvous through whichever Store the job uses (in-memory, TCP,
// coordinator), scoped by the caller (e.g. a PrefixStore).
//
// Gloo's store interface reports errors by throwing; this adapter throws gloo::IoException and
// remembers the first underlying absl::Status, so the caller, which catches at the boundary, can
// return the original code (kDeadlineExceeded for a missing key, kUnavailable for a dead store).
// get() has no timeout parameter in Gloo's interface: it uses the adapter's timeout.
//
// Thread-safety: as thread-safe as the wrapped store; error() is guarded.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gloo/rendezvous/store.h"
#include "worker/store/store.h"

namespace dstrain::comm {

class GlooStoreAdapter final : public gloo::rendezvous::Store {
 public:
  // REQUIRES: `store` outlives the adapter.
  GlooStoreAdapter(dstrain::store::Store* store, absl::Duration timeout);

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

  // The first error turned into an exception; OK when there was none.
  absl::Status error() const;

 private:
  [[noreturn]] void Throw(absl::Status status);

  dstrain::store::Store* const store_;
  const absl::Duration timeout_;
  mutable absl::Mutex mu_;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dstrain::comm
