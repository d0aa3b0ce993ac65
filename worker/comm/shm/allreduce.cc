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
    DT_RETURN_IF_ERROR(steps.Begin());
    std::memcpy(steps.my_slot(), chunk, n * esize);
    DT_RETURN_IF_ERROR(steps.Arrive());
    // This rank's share, from every rank's slot into the shared output buffer.
    const Share share = ShareOf(n, size, steps.rank(), LineElements(esize));
    if (share.end > share.begin) {
      for (int q = 0; q < size; ++q) inputs[q] = steps.slot(q) + share.begin * esize;
      ReduceBuffers(inputs.data(), size, steps.out() + share.begin * esize, share.end - share.begin,
                    buffer.dtype, op);
    }
    DT_RETURN_IF_ERROR(steps.Reduced());
    std::memcpy(chunk, steps.out(), n * esize);
    steps.Done();
  }
  return absl::OkStatus();
}

}  // namespace dstrain::comm::shm_internal
