#include "worker/comm/gloo/broadcast.h"

#include <cstddef>

#include "common/status/status_macros.h"

namespace dstrain::comm::gloo_internal {

absl::Status RunBroadcast(Runner& run, CommBuffer buffer, int root) {
  const int rank = run.rank();
  const int n = run.size();
  const size_t bytes = static_cast<size_t>(buffer.count) * DTypeSize(buffer.dtype);
  if (bytes == 0 || n == 1) return absl::OkStatus();
  // Binomial tree over ranks relative to the root: receive from the parent, then send to the
  // children, largest subtree first.
  const int v = Mod(rank - root, n);
  int mask = 1;
  while (mask < n) {
    if (v & mask) {
      DT_RETURN_IF_ERROR(run.Recv(Mod(v - mask + root, n), buffer.data, bytes));
      DT_RETURN_IF_ERROR(run.WaitAll());
      break;
    }
    mask <<= 1;
  }
  for (mask >>= 1; mask > 0; mask >>= 1) {
    if (v + mask < n) DT_RETURN_IF_ERROR(run.Send(Mod(v + mask + root, n), buffer.data, bytes));
  }
  return run.WaitAll();
}

}  // namespace dstrain::comm::gloo_internal
