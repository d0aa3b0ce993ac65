// The collective algorithms of ShmCommunicator, one a file, over the Steps of steps.h. Each runs
// on the communicator's worker thread with the arguments already checked, and returns the first
// wait that failed (the caller prefixes the operation, the group and the rank).
//
// Each rank reduces only its own share of every chunk, straight from all ranks' slots into the
// shared output buffer (reduce-scatter in shared memory), then every rank copies the whole chunk
// out (all-gather): every element is reduced by exactly one rank, in rank order, with f32
// accumulation and one rounding (cpu_reduce.h), so every rank gets the same bits, and two ranks
// keep two cores busy.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "worker/comm/communicator.h"
#include "worker/comm/shm/steps.h"

namespace dstrain::comm::shm_internal {

// In place: AllReduce of `buffer` (chunks of chunk_bytes: copy-in, reduce own share, copy-out).
absl::Status RunAllReduce(Steps& steps, const CommBuffer& buffer, ReduceOp op);
// Each step stages a piece of every destination's chunk; rank r reduces piece r of all slots
// straight into its output (no output buffer, no copy-out).
absl::Status RunReduceScatter(Steps& steps, const CommBuffer& input, const CommBuffer& output,
                              ReduceOp op);
// Each step stages a piece of every rank's input; every rank copies all of them out.
absl::Status RunAllGather(Steps& steps, const CommBuffer& input, const CommBuffer& output);
// The root stages a piece per step; the others copy it out.
absl::Status RunBroadcast(Steps& steps, const CommBuffer& buffer, int root);
// The same collectives when every rank's buffer (AllReduce's, ReduceScatter's and AllGather's
// input) lies in a shared window (windows.h), inside the step AgreeOnWindows began, which gave
// `at`: every rank's address of its buffer. Nothing is staged: each rank reduces its share of
// the buffer block by block from the peers' buffers in rank order (the same bits as staged) and
// writes it into every rank's buffer (AllReduce) or its output (ReduceScatter); AllGather copies
// each rank's input from where it lies. All end with Steps::Finish.
absl::Status RunAllReduceShared(Steps& steps, const std::vector<char*>& at,
                                const CommBuffer& buffer, ReduceOp op);
absl::Status RunReduceScatterShared(Steps& steps, const std::vector<char*>& at,
                                    const CommBuffer& input, const CommBuffer& output, ReduceOp op);
absl::Status RunAllGatherShared(Steps& steps, const std::vector<char*>& at, const CommBuffer& input,
                                const CommBuffer& output);
// Elements of a block a shared reduction reduces at a time: small enough that the block it wrote
// is still in cache when it copies it to the peers.
inline int64_t SharedBlockElements(size_t esize) {
  return std::max<int64_t>(1, (int64_t{32} << 10) / static_cast<int64_t>(esize));
}

// One step without data: nobody leaves before everyone arrived.
absl::Status RunBarrier(Steps& steps);

// Rank `rank`'s share [begin, end) of `n` elements split `size` ways, shares rounded up to
// multiples of `align` elements, so that two ranks never write the same cache line.
struct Share {
  int64_t begin;
  int64_t end;
};
inline Share ShareOf(int64_t n, int size, int rank, int64_t align) {
  const int64_t per = (n + size - 1) / size;
  const int64_t rounded = (per + align - 1) / align * align;
  return Share{std::min(n, rank * rounded), std::min(n, (rank + 1) * rounded)};
}

// Elements per cache line of a `esize`-byte dtype (at least 1).
inline int64_t LineElements(size_t esize) { return std::max<int64_t>(1, 64 / esize); }

}  // namespace dstrain::comm::shm_internal
