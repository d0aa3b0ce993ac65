#include <cstring>

#include "common/status/status_macros.h"
#include "worker/comm/shm/algorithms.h"

namespace dstrain::comm::shm_internal {

absl::Status RunAllGather(Steps& steps, const CommBuffer& input, const CommBuffer& output) {
  const int size = steps.size();
  const size_t esize = DTypeSize(input.dtype);
  const int64_t m = input.count;  // elements per rank
  const int64_t per_step = steps.chunk_bytes() / static_cast<int64_t>(esize);
  const char* in = static_cast<const char*>(input.data);
  char* out = static_cast<char*>(output.data);
  for (int64_t offset = 0; offset < m; offset += per_step) {
    const int64_t n = std::min(per_step, m - offset);
    DT_RETURN_IF_ERROR(steps.Begin());
    std::memcpy(steps.my_slot(), in + offset * esize, n * esize);
    DT_RETURN_IF_ERROR(steps.Arrive());
    // In place (input is this rank's chunk of output): copying the staged copy back over it
    // writes the same bytes.
    for (int q = 0; q < size; ++q) {
      std::memcpy(out + (q * m + offset) * esize, steps.slot(q), n * esize);
    }
    steps.Done();
  }
  return absl::OkStatus();
}

}  // namespace dstrain::comm::shm_internal
