#include <cstring>
#include <vector>

#include "common/status/status_macros.h"
#include "worker/comm/cpu_reduce.h"
#include "worker/comm/shm/algorithms.h"

namespace dstrain::comm::shm_internal {

absl::Status RunAllReduce(Steps& steps, const CommBuffer& buffer, ReduceOp op) {
  const int size = steps.size();
  const size_t esize = DTypeSize(buffer.dtype);
  const int64_t per_step = steps.chunk_bytes() / static_cast<int64_t>(esize);
  char* data = static_cast<char*>(buffer.data);
  std::vector<const void*> inputs(size);
  for (int64_t offset = 0; offset < buffer.count; offset += per_step) {
    const int64_t n = std::min(per_step, buffer.count - offset);
    char* chunk = data + offset * esize;
    // This rank's share of the chunk is read by this rank only: it stays in the caller's buffer,
    // and only the others' shares are staged (for two ranks: half the copy-in and copy-out).
    const Share share = ShareOf(n, size, steps.rank(), LineElements(esize));
    const int64_t b = share.begin * esize, e = share.end * esize, all = n * esize;
    DT_RETURN_IF_ERROR(steps.Begin());
    std::memcpy(steps.my_slot(), chunk, b);
    std::memcpy(steps.my_slot() + e, chunk + e, all - e);
    DT_RETURN_IF_ERROR(steps.Arrive());
    if (e > b) {
      // Reduce the share in rank order into the caller's buffer, then publish it for the others.
      for (int q = 0; q < size; ++q) {
        inputs[q] = q == steps.rank() ? static_cast<const void*>(chunk + b) : steps.slot(q) + b;
      }
      ReduceBuffers(inputs.data(), size, chunk + b, share.end - share.begin, buffer.dtype, op);
      std::memcpy(steps.out() + b, chunk + b, e - b);
    }
    DT_RETURN_IF_ERROR(steps.Reduced());
    std::memcpy(chunk, steps.out(), b);
    std::memcpy(chunk + e, steps.out() + e, all - e);
    steps.Done();
  }
  return absl::OkStatus();
}

}  // namespace dstrain::comm::shm_internal
