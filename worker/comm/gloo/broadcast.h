// Broadcast over a binomial tree, for GlooCommunicator (Gloo's BroadcastOneToAll sends from
// the root to every rank in turn; the tree spreads that work over log2(n) rounds).
#pragma once

#include "absl/status/status.h"
#include "worker/comm/communicator.h"
#include "worker/comm/gloo/algorithm.h"

namespace dstrain::comm::gloo_internal {

// Copies root's `buffer` into every rank's. Over ranks numbered relative to the root, each rank
// receives from its parent in the tree, then sends to its children, largest subtree first.
// REQUIRES: the arguments passed CheckBroadcastArgs; every rank passes the same count, dtype and
// root.
absl::Status RunBroadcast(Runner& run, CommBuffer buffer, int root);

}  // namespace dstrain::comm::gloo_internal
