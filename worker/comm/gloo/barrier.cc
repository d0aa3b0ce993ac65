#include "worker/comm/gloo/barrier.h"

#include "common/status/status_macros.h"

namespace dstrain::comm::gloo_internal {

absl::Status RunBarrier(Runner& run) {
  const int rank = run.rank();
  const int n = run.size();
  Workspace& ws = run.workspace();
  // Dissemination: in round k every rank signals rank + 2^k and hears from rank - 2^k.
  for (int k = 1; k < n; k <<= 1) {
    DT_RETURN_IF_ERROR(run.Recv(Mod(rank - k, n), &ws.token_in, 1));
    DT_RETURN_IF_ERROR(run.Send(Mod(rank + k, n), &ws.token_out, 1));
    DT_RETURN_IF_ERROR(run.WaitAll());
  }
  return absl::OkStatus();
}

}  // namespace dstrain::comm::gloo_internal
