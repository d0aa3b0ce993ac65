#include "worker/comm/gloo/allreduce_ring.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "common/status/status_macros.h"
#include "worker/comm/cpu_reduce.h"

namespace dstrain::comm::gloo_internal {
namespace {

// Element ranges of the n chunks a ring splits `count` elements into (sizes differ by at most 1).
struct Chunks {
  Chunks(int64_t count, int n) : base(count / n), extra(count % n) {}
  int64_t offset(int i) const { return i * base + std::min<int64_t>(i, extra); }
  int64_t size(int i) const { return base + (i < extra ? 1 : 0); }
  int64_t base;
  int64_t extra;
};

}  // namespace

absl::Status RunAllReduce(Runner& run, CommBuffer buffer, ReduceOp op) {
  const int rank = run.rank();
  const int n = run.size();
  const int64_t count = buffer.count;
  if (count == 0 || n == 1) return absl::OkStatus();  // x / 1 == x: nothing to do for kAvg either
  Workspace& ws = run.workspace();
  const DType dtype = buffer.dtype;
  const size_t es = DTypeSize(dtype);
  char* bytes = static_cast<char*>(buffer.data);
  float* work = reinterpret_cast<float*>(buffer.data);
  if (dtype != DType::kF32) {
    if (ws.a.size() < static_cast<size_t>(count)) ws.a.resize(count);
    work = ws.a.data();
    ToF32(buffer.data, dtype, count, work);
  }
  const Chunks chunks(count, n);
  if (ws.b.size() < static_cast<size_t>(chunks.size(0))) ws.b.resize(chunks.size(0));
  float* incoming = ws.b.data();
  const int left = Mod(rank - 1, n);
  const int right = Mod(rank + 1, n);

  // Reduce-scatter in f32: at step s this rank passes on the partial sum of chunk r-s-1 and
  // receives that of chunk r-s-2, adding its own share; after n-1 steps it owns chunk r.
  for (int s = 0; s < n - 1; ++s) {
    const int send_chunk = Mod(rank - s - 1, n);
    const int recv_chunk = Mod(rank - s - 2, n);
    DT_RETURN_IF_ERROR(run.Recv(left, incoming, chunks.size(recv_chunk) * sizeof(float)));
    DT_RETURN_IF_ERROR(
        run.Send(right, work + chunks.offset(send_chunk), chunks.size(send_chunk) * sizeof(float)));
    DT_RETURN_IF_ERROR(run.WaitAll());
    AccumulateF32(work + chunks.offset(recv_chunk), incoming, DType::kF32, chunks.size(recv_chunk),
                  op);
  }
  // Finish the owned chunk: one division for kAvg, one rounding to the dtype.
  const int64_t mine = chunks.offset(rank);
  FinishF32(work + mine, chunks.size(rank), op, n);
  if (dtype != DType::kF32) FromF32(work + mine, chunks.size(rank), dtype, bytes + mine * es);

  // All-gather the finished chunks in the buffer's dtype.
  for (int s = 0; s < n - 1; ++s) {
    const int send_chunk = Mod(rank - s, n);
    const int recv_chunk = Mod(rank - s - 1, n);
    DT_RETURN_IF_ERROR(
        run.Recv(left, bytes + chunks.offset(recv_chunk) * es, chunks.size(recv_chunk) * es));
    DT_RETURN_IF_ERROR(
        run.Send(right, bytes + chunks.offset(send_chunk) * es, chunks.size(send_chunk) * es));
    DT_RETURN_IF_ERROR(run.WaitAll());
  }
  return absl::OkStatus();
}

}  // namespace dstrain::comm::gloo_internal
