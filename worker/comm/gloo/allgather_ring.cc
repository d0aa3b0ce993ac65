#include "worker/comm/gloo/allgather_ring.h"

#include <cstddef>
#include <cstring>

#include "common/status/status_macros.h"

namespace dstrain::comm::gloo_internal {

absl::Status RunAllGather(Runner& run, CommBuffer input, CommBuffer output) {
  const int rank = run.rank();
  const int n = run.size();
  const size_t chunk = static_cast<size_t>(input.count) * DTypeSize(input.dtype);
  if (chunk == 0) return absl::OkStatus();
  char* out = static_cast<char*>(output.data);
  if (out + rank * chunk != input.data) std::memmove(out + rank * chunk, input.data, chunk);
  const int left = Mod(rank - 1, n);
  const int right = Mod(rank + 1, n);
  for (int s = 0; s < n - 1; ++s) {
    const int send_chunk = Mod(rank - s, n);
    const int recv_chunk = Mod(rank - s - 1, n);
    DT_RETURN_IF_ERROR(run.Recv(left, out + recv_chunk * chunk, chunk));
    DT_RETURN_IF_ERROR(run.Send(right, out + send_chunk * chunk, chunk));
    DT_RETURN_IF_ERROR(run.WaitAll());
  }
  return absl::OkStatus();
}

}  // namespace dstrain::comm::gloo_internal
