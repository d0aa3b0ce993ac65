// FailureRecords: how the ranks of a GlooCommunicator group tell each other, through the store,
// that a collective failed and why.
//
// NOTE [Failure records]: a rank whose collective fails records why under "fail/<seq>/<rank>" and
// bumps "fail/<seq>/count", then waits (failure_report_grace) for the others' records and names
// the ranks whose record is missing. Meanwhile a watchdog polls the count of the collective running
// here once it has run for failure_poll_interval, and interrupts its waits when a peer failed: Gloo
// does not wake a send blocked on a peer that reset its connection, and a rank whose ring
// neighbour is alive would otherwise sit out its whole timeout. A rank that loses a connection
// reads the peer's record to say why the peer went away.
//
// The keys are part of the protocol between the ranks: every rank of a group must agree on them.
// Thread-safe (the store is); every call is at least one store round trip.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/store/store.h"

namespace dstrain::comm::gloo_internal {

class FailureRecords {
 public:
  // `store` holds this group's keys (the records go under "fail/"); `grace` is
  // GlooOptions::failure_report_grace. REQUIRES: `store` outlives this object.
  FailureRecords(store::Store* store, int rank, int size, absl::Duration grace);

  // Records this rank's failure of collective `seq`. Returns what to append to the error: "", or
  // "; failure records unavailable (<why>)" when the store failed. Nothing to do in a group of 1.
  std::string Publish(int64_t seq, absl::string_view reason);

  // Waits up to min(grace, timeout / 2) for the peers' records of collective `seq`. Returns what to
  // append to the error: "; every other rank failed too", or a sentence naming the ranks whose
  // record is missing ("" when the grace period is zero).
  std::string AwaitRecords(int64_t seq, absl::Duration timeout);

  // How many ranks recorded failing collective `seq`.
  absl::StatusOr<int64_t> Count(int64_t seq);

  // The failure record of `peer` for collective `seq`, if it wrote one.
  std::optional<std::string> Record(int64_t seq, int peer);

  // "rank 1 failed first: <its reason>" from the records of collective `seq` (the lowest peer with
  // a record), or "a peer failed first" when none can be read.
  std::string PeerFailure(int64_t seq);

 private:
  store::Store* const store_;
  const int rank_;
  const int size_;
  const absl::Duration grace_;
};

}  // namespace dstrain::comm::gloo_internal
