// Ring all-reduce with f32 accumulation, after Gloo's AllreduceRing, for GlooCommunicator.
//
// Gloo's own ring reduces in the buffer's dtype; ours accumulates bf16/f16 in f32 and rounds once,
// as communicator.h promises, and has each element finished by exactly one rank, so that every rank
// ends with the same bits.
#pragma once

#include "absl/status/status.h"
#include "worker/comm/communicator.h"
#include "worker/comm/gloo/algorithm.h"

namespace dstrain::comm::gloo_internal {

// Reduces `buffer` in place over the group with `op`. The buffer is cut into size() chunks (their
// sizes differ by at most one element). A ring reduce-scatter of f32 partial sums (bf16/f16 are
// converted to an f32 copy first) leaves each rank owning the sum of one chunk, which it finishes
// (kAvg: one division, then one rounding to the dtype); a ring all-gather of the finished chunks,
// in the buffer's dtype, then gives every rank the whole result. 2 * (size() - 1) steps, each
// sending one chunk to the right neighbour and receiving one from the left. REQUIRES: the arguments
// passed CheckAllReduceArgs; every rank passes the same count, dtype and op.
absl::Status RunAllReduce(Runner& run, CommBuffer buffer, ReduceOp op);

}  // namespace dstrain::comm::gloo_internal
