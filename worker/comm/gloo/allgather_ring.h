// Ring all-gather, after Gloo's AllgatherRing, for GlooCommunicator.
#pragma once

#include "absl/status/status.h"
#include "worker/comm/communicator.h"
#include "worker/comm/gloo/algorithm.h"

namespace dstrain::comm::gloo_internal {

// Gathers every rank's `input` into `output` (size() chunks; chunk r is rank r's input): this
// rank's input is copied into its own chunk, then size() - 1 steps each pass the chunk received
// last to the right neighbour and receive the next from the left. `input` may be this rank's own
// chunk of `output`. REQUIRES: the arguments passed CheckAllGatherArgs; every rank passes the same
// counts and dtype.
absl::Status RunAllGather(Runner& run, CommBuffer input, CommBuffer output);

}  // namespace dstrain::comm::gloo_internal
