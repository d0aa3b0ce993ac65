#include <cstring>

#include "common/status/status_macros.h"
#include "worker/comm/shm/algorithms.h"

namespace dstrain::comm::shm_internal {

absl::Status RunBroadcast(Steps& steps, const CommBuffer& buffer, int root) {
  const int64_t bytes = buffer.count * static_cast<int64_t>(DTypeSize(buffer.dtype));
  const int64_t per_step = steps.chunk_bytes();
  char* data = static_cast<char*>(buffer.data);
  const bool is_root = steps.rank() == root;
  for (int64_t offset = 0; offset < bytes; offset += per_step) {
    const int64_t n = std::min(per_step, bytes - offset);
    DT_RETURN_IF_ERROR(steps.Begin());
    if (is_root) std::memcpy(steps.my_slot(), data + offset, n);
    DT_RETURN_IF_ERROR(steps.Arrive());
    if (!is_root) std::memcpy(data + offset, steps.slot(root), n);
    steps.Done();
  }
  return absl::OkStatus();
}

}  // namespace dstrain::comm::shm_internal
