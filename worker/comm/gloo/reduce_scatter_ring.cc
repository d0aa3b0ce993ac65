#include "worker/comm/gloo/reduce_scatter_ring.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "common/status/status_macros.h"
#include "worker/comm/cpu_reduce.h"

namespace dstrain::comm::gloo_internal {

absl::Status RunReduceScatter(Runner& run, CommBuffer input, CommBuffer output, ReduceOp op) {
  const int rank = run.rank();
  const int n = run.size();
  const int64_t c = output.count;
  if (c == 0) return absl::OkStatus();
  const DType dtype = input.dtype;
  const size_t es = DTypeSize(dtype);
  const char* in = static_cast<const char*>(input.data);
  if (n == 1) {
    if (output.data != input.data) std::memmove(output.data, input.data, c * es);
    return absl::OkStatus();
  }
  Workspace& ws = run.workspace();
  if (ws.a.size() < static_cast<size_t>(c)) ws.a.resize(c);
  if (ws.b.size() < static_cast<size_t>(c)) ws.b.resize(c);
  float* current = ws.a.data();  // the partial sum this rank passes on
  float* next = ws.b.data();     // the one it receives
  const int left = Mod(rank - 1, n);
  const int right = Mod(rank + 1, n);
  for (int s = 0; s < n - 1; ++s) {
    const int send_chunk = Mod(rank - s - 1, n);
    const int recv_chunk = Mod(rank - s - 2, n);
    const float* outgoing = current;
    if (s == 0) {
      // The first partial is this rank's own chunk.
      if (dtype == DType::kF32) {
        outgoing = reinterpret_cast<const float*>(in + send_chunk * c * es);
      } else {
        ToF32(in + send_chunk * c * es, dtype, c, current);
      }
    }
    DT_RETURN_IF_ERROR(run.Recv(left, next, c * sizeof(float)));
    DT_RETURN_IF_ERROR(run.Send(right, outgoing, c * sizeof(float)));
    DT_RETURN_IF_ERROR(run.WaitAll());
    AccumulateF32(next, in + recv_chunk * c * es, dtype, c, op);
    std::swap(current, next);
  }
  FinishF32(current, c, op, n);
  FromF32(current, c, dtype, output.data);
  return absl::OkStatus();
}

}  // namespace dstrain::comm::gloo_internal
