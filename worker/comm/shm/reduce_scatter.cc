#include <cstring>
#include <vector>

#include "common/status/status_macros.h"
#include "worker/comm/cpu_reduce.h"
#include "worker/comm/shm/algorithms.h"

namespace dstrain::comm::shm_internal {

absl::Status RunReduceScatter(Steps& steps, const CommBuffer& input, const CommBuffer& output,
                              ReduceOp op) {
  const int size = steps.size();
  const int rank = steps.rank();
  const size_t esize = DTypeSize(input.dtype);
  const int64_t m = output.count;  // elements per destination
  // A step stages `per_step` elements for each of the `size` destinations, each piece starting on
  // a cache line of its own.
  const int64_t line = LineElements(esize);
  const int64_t per_step = std::max<int64_t>(
      line, steps.chunk_bytes() / static_cast<int64_t>(esize) / size / line * line);
  const char* in = static_cast<const char*>(input.data);
  char* out = static_cast<char*>(output.data);
  std::vector<const void*> inputs(size);
  for (int64_t offset = 0; offset < m; offset += per_step) {
    const int64_t n = std::min(per_step, m - offset);
    DT_RETURN_IF_ERROR(steps.Begin());
    // In place (output is this rank's chunk of input) is safe: this step's input is staged before
    // any of this step's output is written, and later steps read later offsets.
    for (int d = 0; d < size; ++d) {
      std::memcpy(steps.my_slot() + d * per_step * esize, in + (d * m + offset) * esize, n * esize);
    }
    DT_RETURN_IF_ERROR(steps.Arrive());
    for (int q = 0; q < size; ++q) inputs[q] = steps.slot(q) + rank * per_step * esize;
    ReduceBuffers(inputs.data(), size, out + offset * esize, n, input.dtype, op);
    steps.Done();
  }
  return absl::OkStatus();
}

}  // namespace dstrain::comm::shm_internal
