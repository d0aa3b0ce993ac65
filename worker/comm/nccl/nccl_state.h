// What the files implementing NcclCommunicator share: the State behind a communicator and its
// Work handles, the operations' Launch, and small CUDA helpers. nccl_state.cc defines State,
// nccl_work.cc Launch and the Work it returns, nccl_collectives.cc the operations and
// nccl_communicator.cc Create, Split and the teardown. Internal to worker/comm/nccl.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kernels/cuda_common/cuda_status.h"
#include "worker/comm/communicator.h"
#include "worker/comm/nccl/nccl_communicator.h"

namespace dstrain::comm {
namespace nccl_internal {

constexpr absl::Duration kFirstPoll = absl::Microseconds(10);
constexpr int64_t kWorkElementBytes = 4;  // f32 values or uint32 max keys

// What a collective that timed out waited for.
constexpr absl::string_view kCollectiveWaitedFor =
    "not every rank of the group arrived, or one is stuck (NCCL cannot tell which rank)";

// What a Send or Recv that timed out waited for: `peer` with the matching `partner` operation.
std::string PeerWaitedFor(int peer, absl::string_view partner);

// `status` with `what` in front of its message, same code.
absl::Status Prefixed(absl::string_view what, const absl::Status& status);

// Sleeps between polls: kFirstPoll, doubling up to `max`, never past `until`.
class Backoff {
 public:
  explicit Backoff(absl::Duration max) : max_(std::max(max, kFirstPoll)) {}
  void Sleep(absl::Time until) {
    const absl::Duration left = until - absl::Now();
    if (left > absl::ZeroDuration()) absl::SleepFor(std::min(next_, left));
    next_ = std::min(next_ * 2, max_);
  }

 private:
  const absl::Duration max_;
  absl::Duration next_ = kFirstPoll;
};

// Makes `device` current for this thread while in scope; restores the previous device after.
class ScopedDevice {
 public:
  ScopedDevice() = default;
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  ~ScopedDevice() {
    if (restore_) cudaSetDevice(previous_);
  }

  absl::Status Enter(int device) {
    DT_CUDA_RETURN_IF_ERROR(cudaGetDevice(&previous_));
    if (previous_ != device) {
      DT_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
      restore_ = true;
    }
    return absl::OkStatus();
  }

 private:
  int previous_ = 0;
  bool restore_ = false;
};

struct EventDeleter {
  void operator()(cudaEvent_t event) const { cudaEventDestroy(event); }
};
using Event = std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, EventDeleter>;

absl::StatusOr<Event> MakeEvent();

// Stream-ordered scratch memory from the communicator's pool, given back (stream-ordered) when it
// goes out of scope: the kernels and NCCL calls enqueued before that still see it.
class StreamScratch {
 public:
  StreamScratch() = default;
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  ~StreamScratch() {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);
  }

  absl::Status Allocate(int64_t bytes, cudaMemPool_t pool, cudaStream_t stream) {
    stream_ = stream;
    DT_CUDA_RETURN_IF_ERROR(
        cudaMallocFromPoolAsync(&ptr_, static_cast<size_t>(bytes), pool, stream));
    return absl::OkStatus();
  }
  char* get() const { return static_cast<char*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

// The config of every communicator: non-blocking, so that init, enqueue and abort can be bounded.
ncclConfig_t NonBlockingConfig(const std::string& name);

}  // namespace nccl_internal

// Everything the communicator shares with its Work handles, which may outlive it.
struct NcclCommunicator::State {
  State(std::string name, int rank, int size, int device, absl::Duration max_poll_interval)
      : name(std::move(name)),
        rank(rank),
        size(size),
        device(device),
        max_poll_interval(max_poll_interval) {}

  ~State();

  // The internal stream, the Barrier element and the scratch pool. REQUIRES: `device` current.
  absl::Status InitResources();

  absl::Status FirstError();

  // kAborted for an operation attempted on (or pending in) a poisoned communicator.
  absl::Status AbortedReason();
  absl::Status AbortedError(absl::string_view what);

  // Records `cause` as the first error (unless there is one) and aborts the NCCL communicator.
  // REQUIRES: comm_mu not held by this thread.
  void Poison(const absl::Status& cause);

  // An asynchronous NCCL error, if NCCL reports one now. Never waits for comm_mu: while another
  // thread holds it (enqueueing) this reports nothing. Does not poison.
  std::optional<absl::Status> PeekNcclError(absl::string_view what);

  // After `call` returned `result` on the non-blocking communicator `nccl`: waits until NCCL
  // finished it (its state leaves ncclInProgress), this State is poisoned (kAborted) or `deadline`
  // passes (kDeadlineExceeded saying `waited_for`; `timeout` only words it). The message does not
  // name the operation: the caller puts that in front. REQUIRES: calls on `nccl` are serialised by
  // the caller (the comm_mu of its State held).
  absl::Status AwaitNccl(ncclComm_t nccl, ncclResult_t result, const char* call,
                         absl::Time deadline, absl::Duration timeout, absl::string_view waited_for);

  // Waits until NCCL's own thread has stored a communicator handle into *handle.
  absl::Status AwaitHandle(ncclComm_t* handle, const char* call, absl::Time deadline,
                           absl::Duration timeout);

  const std::string name;
  const int rank;
  const int size;
  const int device;
  const absl::Duration max_poll_interval;

  // Set up once by Create/Split before the State is shared.
  cudaStream_t internal_stream = nullptr;
  float* barrier_scratch = nullptr;
  cudaMemPool_t scratch_pool = nullptr;

  // The NCCL communicator; every NCCL call on it holds comm_mu. Null once aborted or destroyed.
  absl::Mutex comm_mu;
  ncclComm_t comm ABSL_GUARDED_BY(comm_mu) = nullptr;

  absl::Mutex error_mu;
  absl::Status error ABSL_GUARDED_BY(error_mu);  // the first error
  std::atomic<bool> poisoned{false};             // error is set
};

namespace nccl_internal {

using Enqueue = absl::FunctionRef<absl::Status(ncclComm_t, cudaStream_t, absl::Time)>;

// Enqueues an operation: `enqueue` issues its NCCL calls and kernels on `stream` (the buffer's, or
// the internal stream for null) under comm_mu, then the completion event is recorded behind them.
// A failure at this point poisons the communicator: the other ranks are inside the collective by
// now and could only time out.
absl::StatusOr<std::unique_ptr<Work>> Launch(const std::shared_ptr<NcclCommunicator::State>& state,
                                             const std::string& what, std::string waited_for,
                                             void* stream_or_null, const CommOptions& options,
                                             Enqueue enqueue);

}  // namespace nccl_internal
}  // namespace dstrain::comm
