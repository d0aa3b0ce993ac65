// NcclCommunicator: the GPU backend of Communicator (communicator.h), on NCCL.
//
// One NCCL communicator per group, created non-blocking (ncclConfig_t::blocking = 0) so that
// initialisation, every enqueue and every wait can be bounded by a timeout and cancelled with
// ncclCommAbort: nothing blocks forever. Rank 0 makes the ncclUniqueId and publishes it in the
// Store; the other ranks read it from there.
//
// NOTE [NCCL streams and completion]
// An operation runs on its buffer's stream (CommBuffer::stream). A null stream means the CUDA
// legacy default stream's order: the operation then runs on the communicator's internal stream,
// a blocking stream that CUDA orders implicitly with the legacy default stream. Barrier always uses
// the internal stream. After the operation the communicator records a CUDA event on that stream;
// Work::IsCompleted queries it and Work::Wait polls it together with ncclCommGetAsyncError. Later
// work on the same stream is ordered after the operation without any host wait, so a caller that
// stays on one stream may drop the Work (it must still keep the buffers alive until the stream
// passed the operation).
//
// NOTE [NCCL timeouts]
// An operation's deadline is its CommOptions::timeout counted from the call (not from when the GPU
// reaches it on a busy stream). Work::Wait enforces it: past the deadline it aborts the NCCL
// communicator and returns kDeadlineExceeded naming the operation and the group. NCCL cannot say
// which rank failed to arrive, so for collectives the message says so; for Send/Recv it names the
// peer. Nothing aborts a late operation unless someone calls Wait (or AsyncError, which only sees
// NCCL's own errors): a watchdog is expected to wait on outstanding Work. Work::Wait's own
// `timeout` argument only bounds that one wait (kDeadlineExceeded, the operation keeps running).
// Enqueueing can itself wait (NCCL connects to peers lazily on first use); it is bounded by the
// same deadline.
//
// NOTE [NCCL reductions]
// communicator.h fixes the numerics that NCCL's own reductions do not have: bf16/f16 reduced with
// f32 accumulation and rounded once, kAvg as the f32 sum divided once by size() (ncclAvg
// multiplies every contribution by 1/size() instead), and kMax propagating NaN (NCCL's float max
// is fmaxf, which drops NaNs). So NCCL only ever reduces 4-byte "work" elements:
//   - sum and average: f32 values with ncclSum; an average is then divided by size() in f32;
//   - max: order-preserving uint32 keys with ncclMax on ncclUint32 (reduce_kernels.h), under
//     which any NaN wins (as the canonical quiet NaN) and max(-0, +0) = +0.
// f32 sums and averages reduce the caller's buffers directly (an average adds one in-place
// division pass); f32 max turns the AllReduce buffer into keys and back in place. bf16/f16, and
// f32 max of a ReduceScatter (whose input is not to be changed), go through a scratch buffer of 4
// bytes per element of the whole input: a widening pass, the NCCL call, a narrowing pass (the cast
// kernels of //kernels/cast/cuda and reduce_kernels.h), and twice the bytes on the wire compared
// with a 16-bit reduction. The scratch comes stream-ordered (cudaMallocFromPoolAsync) from a memory
// pool owned by the communicator, which keeps its peak size until the communicator is destroyed;
// it is not accounted by dstrain's Allocator. NCCL's summation order (ring or tree) differs from a
// CPU backend's rank order, so sums of more than two ranks can differ from Gloo's in the last bit
// of the f32 sum.
//
// NOTE [NCCL point-to-point]
// NCCL has no tags: a Send matches the Recv at its peer that is in the same position in the
// sequence of point-to-point calls between the two ranks, so each rank pair must issue its Sends
// and Recvs in the same order; `tag` only appears in messages. As in every backend, a rank cannot
// send to itself (kInvalidArgument).
//
// Zero-element operations do not reach NCCL (every rank has the same count, so every rank skips
// them); their Work completes when the stream passes the point of the call.
//
// Thread-safety: rank(), size(), name(), backend() and device() are safe anywhere; Abort and
// AsyncError are safe from any thread at any time; operations may be issued from several threads
// (they are serialised), but the order of collectives must be the same on every rank, which only
// one issuing thread guarantees. Work handles may outlive the communicator.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/store/store.h"

namespace dstrain::comm {

struct NcclOptions {
  // Bounds Create: reading rank 0's unique id from the Store plus NCCL's initialisation (which
  // waits for every rank). Split is bounded by its CommOptions::timeout instead.
  absl::Duration init_timeout = absl::Minutes(5);
  // Bounds the destructor's ncclCommFinalize (which waits for operations in flight); past it the
  // communicator is aborted instead.
  absl::Duration destroy_timeout = absl::Seconds(30);
  // Longest sleep between two polls of a CUDA event or of NCCL's state while waiting (the first
  // polls come after 10 microseconds and the interval doubles up to this).
  absl::Duration max_poll_interval = absl::Milliseconds(1);
};

class NcclCommunicator final : public Communicator {
 public:
  // Joins group `name` of `size` ranks as `rank`, on CUDA device `device`. Collective: every rank
  // of the group calls it with the same name, size and store.
  //
  // Rank 0 makes a fresh ncclUniqueId and Sets it under "nccl/<name>/unique_id"; the others Get
  // it, waiting up to options.init_timeout. The key is not deleted afterwards, so a Store shared by
  // several attempts of a job must be scoped per attempt (PrefixStore); otherwise a later rank can
  // read a stale id and its initialisation times out.
  //
  // Errors: kInvalidArgument for bad arguments (null store, size < 1, rank outside [0, size),
  // empty name, device < 0, init_timeout <= 0), checked before the Store or CUDA are touched;
  // kDeadlineExceeded when the id does not appear in time, or when NCCL's initialisation does not
  // finish within options.init_timeout (a rank never called Create; the message says NCCL cannot
  // tell which), after which the half-made communicator has been aborted; the Store's errors;
  // CUDA/NCCL errors via CudaToStatus/NcclToStatus (kFailedPrecondition without a usable device).
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(
      store::Store* store, int rank, int size, absl::string_view name, int device,
      const NcclOptions& options = NcclOptions());

  // Finalizes the NCCL communicator (waiting up to destroy_timeout for operations in flight),
  // or aborts it when that fails or takes too long (Work still pending then fails with kAborted).
  // REQUIRES: no call on this communicator runs concurrently (Work handles may remain).
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  absl::string_view backend() const override { return "nccl"; }
  // The CUDA device every buffer must live on.
  int device() const { return device_; }

  // The operations, with the contract of communicator.h and the notes above. Besides
  // kInvalidArgument (checked before CUDA is touched: counts, dtypes, devices, ranks, and for two
  // buffers that they share a stream or one has none), every call fails with kAborted once the
  // communicator is poisoned. An error while enqueueing (NCCL, CUDA, scratch allocation) poisons
  // the communicator: the other ranks are inside the collective by then.
  absl::StatusOr<std::unique_ptr<Work>> AllReduce(CommBuffer buffer, ReduceOp op,
                                                  const CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> ReduceScatter(CommBuffer input, CommBuffer output,
                                                      ReduceOp op,
                                                      const CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> AllGather(CommBuffer input, CommBuffer output,
                                                  const CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> Broadcast(CommBuffer buffer, int root,
                                                  const CommOptions& options) override;
  // `tag` is not matched by NCCL: see NOTE [NCCL point-to-point].
  absl::StatusOr<std::unique_ptr<Work>> Send(CommBuffer buffer, int dst, int tag,
                                             const CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> Recv(CommBuffer buffer, int src, int tag,
                                             const CommOptions& options) override;
  // An AllReduce (max) of one f32 element on the internal stream: Wait returns once every rank
  // called Barrier and every rank's internal stream reached it.
  absl::StatusOr<std::unique_ptr<Work>> Barrier(const CommOptions& options) override;

  // Records `reason` as the error (unless one is already recorded) and aborts the NCCL
  // communicator (ncclCommAbort: NCCL kernels in flight exit). Pending and later operations fail
  // with kAborted. Idempotent; safe from any thread; may block while NCCL tears down.
  void Abort(absl::Status reason) override;
  // OK, or the first error. Also asks NCCL (ncclCommGetAsyncError): an asynchronous NCCL error
  // (a peer died, a network error) poisons and aborts the communicator here. Never waits for an
  // operation being enqueued by another thread (it then reports only what is already known).
  absl::Status AsyncError() override;

  // ncclCommSplit with color 0 for members of `ranks` and NCCL_SPLIT_NOCOLOR for the others; the
  // new rank is the position in `ranks`. Same device, a new internal stream and scratch pool,
  // bounded by options.timeout (it waits for every rank of this group). A failure or timeout
  // poisons and aborts this communicator (and the half-made new one).
  absl::StatusOr<std::unique_ptr<Communicator>> Split(const std::vector<int>& ranks,
                                                      absl::string_view name,
                                                      const CommOptions& options) override;

  // The state shared with Work handles (defined in nccl_state.h).
  struct State;

 private:
  NcclCommunicator(std::shared_ptr<State> state, const NcclOptions& options);

  const int rank_;
  const int size_;
  const std::string name_;
  const int device_;
  const NcclOptions options_;
  std::shared_ptr<State> state_;
};

}  // namespace dstrain::comm
