// Dissemination barrier, for GlooCommunicator (Gloo's BarrierAllToAll has every rank signal
// every other; dissemination needs log2(n) rounds of one message per rank).
#pragma once

#include "absl/status/status.h"
#include "worker/comm/gloo/algorithm.h"

namespace dstrain::comm::gloo_internal {

// Returns once every rank of the group has entered it: in round k (k = 1, 2, 4, ...) each rank
// sends a 1-byte token to rank + k and waits for the one from rank - k.
absl::Status RunBarrier(Runner& run);

}  // namespace dstrain::comm::gloo_internal
