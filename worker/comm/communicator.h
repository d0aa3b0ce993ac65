// Communicator: collective and point-to-point communication among a fixed group of ranks, after
// PyTorch c10d's ProcessGroup (docs/architecture.md, "Adding a collective").
//
// Contract (every backend):
//   - The rank set is fixed at creation. If membership changes (a rank died, the job restarted),
//     destroy the communicator and create a new one through the Store.
//   - Every rank of the group calls the same collectives in the same order with matching counts
//     and dtypes. Calls return at once with a Work handle; the buffers must stay alive and
//     untouched until Work::Wait returns.
//   - Every call carries a timeout. An operation that cannot complete (a peer died, hangs or
//     never arrived) fails within its timeout with kDeadlineExceeded or kAborted; the message
//     names the operation, the group and the rank(s) waited for. Nothing blocks forever.
//   - After Abort(reason) or a failed collective the communicator is poisoned: every pending and
//     later call fails with kAborted and the first error, which AsyncError() also returns (later
//     calls fail at once: the call itself returns the error).
//   - Invalid arguments (counts, dtypes, ranks, devices, a non-positive timeout) fail the call at
//     once with kInvalidArgument and issue nothing, so the ranks' call sequences stay aligned.
//   - Zero-count operations are legal and keep their place in the order.
//   - bf16 and f16 buffers are reduced with f32 accumulation (converted, summed, rounded once to
//     nearest even), so results do not depend on the backend's summation width.
// Buffers are untyped (pointer, count, dtype, device), as in NCCL and Gloo; on GPUs a stream comes
// with them. Backends: GlooCommunicator (CPU, TCP), NcclCommunicator (GPU), FakeCommunicator (ranks
// as threads of one process, with switches that make a rank fail, stall or hang — for tests).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/tensor/tensor.h"

namespace dstrain::comm {

// kSum: the sum over ranks. kAvg: that sum divided once by size(), in f32, as a division (not a
// multiplication by 1/size(), which would make e.g. 3 * (1/3.f) != 1), so every rank gets the same
// bits and averages of integers stay exact when representable. kMax: the maximum; a NaN on any rank
// makes the element NaN.
enum class ReduceOp { kSum, kAvg, kMax };

// "sum", "avg", "max".
absl::string_view ReduceOpName(ReduceOp op);

// A contiguous buffer of `count` elements of `dtype` (f32, bf16 or f16 for reductions; any dtype
// for gathers, broadcasts and point-to-point).
struct CommBuffer {
  void* data = nullptr;
  int64_t count = 0;
  DType dtype = DType::kF32;
  Device device;
  void* stream = nullptr;  // cudaStream_t for CUDA buffers; null on the CPU
};

struct CommOptions {
  absl::Duration timeout = absl::Minutes(5);
};

// The handle of an operation in flight.
class Work {
 public:
  virtual ~Work() = default;
  // True once the operation finished, successfully or not. Never blocks.
  virtual bool IsCompleted() = 0;
  // Blocks until the operation finished (or `timeout` passes: kDeadlineExceeded, the operation
  // keeps running) and returns its status.
  virtual absl::Status Wait(absl::Duration timeout = absl::InfiniteDuration()) = 0;
};

// Host memory from Communicator::AllocateHostBuffer; freed when destroyed.
class HostBuffer {
 public:
  virtual ~HostBuffer() = default;
  virtual void* data() const = 0;
  virtual int64_t bytes() const = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The group's name, used in every error message ("world", "dp", "pp.0", ...).
  virtual const std::string& name() const = 0;
  virtual absl::string_view backend() const = 0;  // "gloo", "nccl", "fake"

  // In place: every rank ends with op over all ranks' `buffer`.
  virtual absl::StatusOr<std::unique_ptr<Work>> AllReduce(CommBuffer buffer, ReduceOp op,
                                                          const CommOptions& options) = 0;
  // input holds size() chunks of output.count elements; rank r receives op over all ranks' chunk
  // r in `output`; `input` is left unchanged, unless `output` is this rank's own chunk of it (in
  // place, allowed). REQUIRES: input.count == size() * output.count.
  virtual absl::StatusOr<std::unique_ptr<Work>> ReduceScatter(CommBuffer input, CommBuffer output,
                                                              ReduceOp op,
                                                              const CommOptions& options) = 0;
  // output receives size() chunks; chunk r is rank r's input. `input` may be this rank's own
  // chunk of `output` (in place). REQUIRES: output.count == size() * input.count.
  virtual absl::StatusOr<std::unique_ptr<Work>> AllGather(CommBuffer input, CommBuffer output,
                                                          const CommOptions& options) = 0;
  // In place: every rank ends with root's `buffer`.
  virtual absl::StatusOr<std::unique_ptr<Work>> Broadcast(CommBuffer buffer, int root,
                                                          const CommOptions& options) = 0;
  // Point to point; a Send matches the Recv of the same tag from this rank at `dst`, in posting
  // order. Both sides must post the same number of bytes. Send/Recv are not ordered with the
  // collectives (a ring of Sends and Recvs posted before any Wait cannot deadlock).
  virtual absl::StatusOr<std::unique_ptr<Work>> Send(CommBuffer buffer, int dst, int tag,
                                                     const CommOptions& options) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> Recv(CommBuffer buffer, int src, int tag,
                                                     const CommOptions& options) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> Barrier(const CommOptions& options) = 0;

  // `bytes` of zeroed host memory, 64-byte aligned, for buffers this group reduces or gathers
  // often (gradient buckets). A backend may place it where its collectives reach it without
  // copies: the shared-memory backend maps it into every rank, and collectives whose buffers
  // lie in the same such allocation on every rank (anywhere in it) read and write
  // the peers' buffers directly (docs/shm.md, "Shared buffers"). Elsewhere plain memory (this
  // default). Collective: every rank calls it with the same `bytes`, in the same order among its
  // collectives (a collective called before it never finds its memory shared), and every
  // rank destroys it only after its last collective on it completed. Errors: kInvalidArgument
  // (bytes < 0), kResourceExhausted, kDeadlineExceeded naming the ranks that never came.
  virtual absl::StatusOr<std::unique_ptr<HostBuffer>> AllocateHostBuffer(
      int64_t bytes, const CommOptions& options);
  // Whether AllocateHostBuffer's memory is reached by the peers without copies (worth placing
  // the group's frequent buffers there). The same on every rank.
  virtual bool SharesHostBuffers() const { return false; }

  // Fails every pending and later operation with kAborted(reason). Safe from any thread.
  virtual void Abort(absl::Status reason) = 0;
  // OK, or the error that poisoned the communicator.
  virtual absl::Status AsyncError() = 0;

  // Creates a sub-group of `ranks` (ranks of this group, ascending). Collective: every rank of
  // this group calls it with the same arguments; members get the new communicator, others get
  // nullptr. Used for the data and pipeline axes.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Split(const std::vector<int>& ranks,
                                                              absl::string_view name,
                                                              const CommOptions& options) = 0;

 protected:
  Communicator() = default;
};

// "AllReduce on group 'world' (rank 1 of 4)": the prefix of every error message about `op`.
std::string OpDescription(const Communicator& c, absl::string_view op);

// Validation shared by the backends: element counts, dtypes and ranks in range. Errors are
// kInvalidArgument naming the operation and the group; OK otherwise.
//
// A buffer whose count is negative, or positive with a null data pointer.
absl::Status CheckBuffer(const Communicator& c, absl::string_view op, const CommBuffer& b);
// CheckBuffer, and a dtype that can be reduced (f32, bf16, f16).
absl::Status CheckReduceBuffer(const Communicator& c, absl::string_view op, const CommBuffer& b);
// `peer` (named `what`: "root", "dst", "src") is a rank of the group; for point to point
// (`allow_self` false) it must not be this rank.
absl::Status CheckPeer(const Communicator& c, absl::string_view op, int peer,
                       absl::string_view what, bool allow_self);
// `whole` holds size() chunks of `chunk` (ReduceScatter's input, AllGather's output): same dtype,
// whole.count == size() * chunk.count.
absl::Status CheckChunked(const Communicator& c, absl::string_view op, const CommBuffer& whole,
                          const CommBuffer& chunk);
// Every buffer of `op` lives on `type` (a backend that moves bytes with memcpy needs kCpu).
absl::Status CheckDevice(const Communicator& c, absl::string_view op, const CommBuffer& b,
                         DeviceType type);
// CommOptions::timeout is positive (absl::InfiniteDuration() included).
absl::Status CheckOptions(const Communicator& c, absl::string_view op, const CommOptions& options);

// The complete argument checks of each operation, in the order every backend runs them (so the
// first error reported is the same whatever the backend). `device` is the backend's device type.
absl::Status CheckAllReduceArgs(const Communicator& c, const CommBuffer& buffer,
                                const CommOptions& options, DeviceType device);
absl::Status CheckReduceScatterArgs(const Communicator& c, const CommBuffer& input,
                                    const CommBuffer& output, const CommOptions& options,
                                    DeviceType device);
absl::Status CheckAllGatherArgs(const Communicator& c, const CommBuffer& input,
                                const CommBuffer& output, const CommOptions& options,
                                DeviceType device);
absl::Status CheckBroadcastArgs(const Communicator& c, const CommBuffer& buffer, int root,
                                const CommOptions& options, DeviceType device);
// Send ("dst") and Recv ("src"): a peer other than this rank.
absl::Status CheckPointToPointArgs(const Communicator& c, absl::string_view op,
                                   const CommBuffer& buffer, int peer, absl::string_view peer_name,
                                   const CommOptions& options, DeviceType device);
// A Split's `ranks`: non-empty, ascending, distinct ranks of this group.
absl::Status CheckSplitRanks(const Communicator& c, const std::vector<int>& ranks,
                             absl::string_view name);

}  // namespace dstrain::comm
