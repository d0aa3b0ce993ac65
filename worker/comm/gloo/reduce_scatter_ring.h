// Ring reduce-scatter with f32 accumulation, for GlooCommunicator (Gloo's
// ReduceScatterHalvingDoubling halves and doubles, in the buffer's dtype).
//
// The same ring as the first half of RunAllReduce (allreduce_ring.h), over an input that holds one
// equal chunk per rank: the partial sums travel in f32 scratch, so the input is only read, and each
// rank rounds its own chunk once, into the output.
#pragma once

#include "absl/status/status.h"
#include "worker/comm/communicator.h"
#include "worker/comm/gloo/algorithm.h"

namespace dstrain::comm::gloo_internal {

// Reduces chunk rank() of `input` (size() chunks of output.count elements) over the group with
// `op` into `output`: size() - 1 steps, each passing an f32 partial sum to the right neighbour and
// adding this rank's share to the one received from the left; then kAvg's one division and one
// rounding to the dtype. `input` is not written, unless `output` is this rank's own chunk of it
// (allowed: the last step reads that chunk before the result is written).
// REQUIRES: the arguments passed CheckReduceScatterArgs; every rank passes the same counts, dtype
// and op.
absl::Status RunReduceScatter(Runner& run, CommBuffer input, CommBuffer output, ReduceOp op);

}  // namespace dstrain::comm::gloo_internal
