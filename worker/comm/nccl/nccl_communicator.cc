#include "worker/comm/nccl/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status/status_macros.h"
#include "kernels/cast/cuda/cast_cuda.h"
#include "kernels/cuda_common/cuda_status.h"
#include "worker/comm/nccl/nccl_args.h"
#include "worker/comm/nccl/nccl_status.h"
#include "worker/comm/nccl/reduce_kernels.h"

namespace dstrain::comm {
namespace {

using kernels::gpu::CudaToStatus;

constexpr absl::Duration kFirstPoll = absl::Microseconds(10);
constexpr int64_t kWorkElementBytes = 4;  // f32 values or uint32 max keys

// What a collective that timed out waited for.
constexpr absl::string_view kCollectiveWaitedFor =
    "not every rank of the group arrived, or one is stuck (NCCL cannot tell which rank)";

std::string PeerWaitedFor(int peer, absl::string_view partner) {
  return absl::StrCat("rank ", peer, " did not arrive with the matching ", partner,
                      ", or is stuck");
}

// `status` with `what` in front of its message, same code.
absl::Status Prefixed(absl::string_view what, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(what, ": ", status.message()));
}

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

absl::StatusOr<Event> MakeEvent() {
  cudaEvent_t event = nullptr;
  DT_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return Event(event);
}

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
ncclConfig_t NonBlockingConfig(const std::string& name) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  config.commName = name.c_str();
  return config;
}

}  // namespace

// Everything the communicator shares with its Work handles, which may outlive it.
struct NcclCommunicator::State {
  State(std::string name, int rank, int size, int device, absl::Duration max_poll_interval)
      : name(std::move(name)),
        rank(rank),
        size(size),
        device(device),
        max_poll_interval(max_poll_interval) {}

  ~State() {
    ScopedDevice scoped;
    scoped.Enter(device).IgnoreError();
    if (scratch_pool != nullptr) cudaMemPoolDestroy(scratch_pool);  // deferred while in use
    if (barrier_scratch != nullptr) cudaFree(barrier_scratch);
    if (internal_stream != nullptr) cudaStreamDestroy(internal_stream);
  }

  // The internal stream, the Barrier element and the scratch pool. REQUIRES: `device` current.
  absl::Status InitResources() {
    DT_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&internal_stream));  // blocking: see the header
    DT_CUDA_RETURN_IF_ERROR(cudaMalloc(&barrier_scratch, sizeof(float)));
    DT_CUDA_RETURN_IF_ERROR(cudaMemset(barrier_scratch, 0, sizeof(float)));
    cudaMemPoolProps props = {};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    DT_CUDA_RETURN_IF_ERROR(cudaMemPoolCreate(&scratch_pool, &props));
    uint64_t keep = std::numeric_limits<uint64_t>::max();  // keep the peak: no re-mapping per call
    DT_CUDA_RETURN_IF_ERROR(
        cudaMemPoolSetAttribute(scratch_pool, cudaMemPoolAttrReleaseThreshold, &keep));
    return absl::OkStatus();
  }

  absl::Status FirstError() {
    absl::MutexLock lock(&error_mu);
    return error;
  }

  // kAborted for an operation attempted on (or pending in) a poisoned communicator.
  absl::Status AbortedReason() {
    return absl::AbortedError(absl::StrCat("the communicator of group '", name,
                                           "' is aborted: ", FirstError().ToString()));
  }
  absl::Status AbortedError(absl::string_view what) { return Prefixed(what, AbortedReason()); }

  // Records `cause` as the first error (unless there is one) and aborts the NCCL communicator.
  // REQUIRES: comm_mu not held by this thread.
  void Poison(const absl::Status& cause) {
    {
      absl::MutexLock lock(&error_mu);
      if (error.ok()) {
        error = cause.ok() ? absl::AbortedError("aborted without a reason") : cause;
      }
      poisoned.store(true);
    }
    absl::MutexLock lock(&comm_mu);
    if (comm != nullptr) {
      ScopedDevice scoped;
      scoped.Enter(device).IgnoreError();
      ncclCommAbort(comm);  // frees it; NCCL kernels in flight exit
      comm = nullptr;
    }
  }

  // An asynchronous NCCL error, if NCCL reports one now. Never waits for comm_mu: while another
  // thread holds it (enqueueing) this reports nothing. Does not poison.
  std::optional<absl::Status> PeekNcclError(absl::string_view what) {
    if (!comm_mu.TryLock()) return std::nullopt;
    std::optional<absl::Status> found;
    if (comm != nullptr) {
      ncclResult_t async = ncclSuccess;
      const ncclResult_t query = ncclCommGetAsyncError(comm, &async);
      if (query != ncclSuccess) {
        found =
            Prefixed(what, NcclToStatus(query, "ncclCommGetAsyncError", __FILE__, __LINE__, comm));
      } else if (async != ncclSuccess && async != ncclInProgress) {
        found = Prefixed(absl::StrCat(what, ": NCCL reported an asynchronous error"),
                         NcclToStatus(async, "ncclCommGetAsyncError", __FILE__, __LINE__, comm));
      }
    }
    comm_mu.Unlock();
    return found;
  }

  // After `call` returned `result` on the non-blocking communicator `nccl`: waits until NCCL
  // finished it (its state leaves ncclInProgress), this State is poisoned (kAborted) or `deadline`
  // passes (kDeadlineExceeded saying `waited_for`; `timeout` only words it). The message does not
  // name the operation: the caller puts that in front. REQUIRES: calls on `nccl` are serialised by
  // the caller (the comm_mu of its State held).
  absl::Status AwaitNccl(ncclComm_t nccl, ncclResult_t result, const char* call,
                         absl::Time deadline, absl::Duration timeout,
                         absl::string_view waited_for) {
    if (result == ncclSuccess) return absl::OkStatus();
    if (result != ncclInProgress) return NcclToStatus(result, call, __FILE__, __LINE__, nccl);
    Backoff backoff(max_poll_interval);
    for (;;) {
      ncclResult_t async = ncclSuccess;
      const ncclResult_t query = ncclCommGetAsyncError(nccl, &async);
      if (query != ncclSuccess) {
        return NcclToStatus(query, "ncclCommGetAsyncError", __FILE__, __LINE__, nccl);
      }
      if (async == ncclSuccess) return absl::OkStatus();
      if (async != ncclInProgress) return NcclToStatus(async, call, __FILE__, __LINE__, nccl);
      if (poisoned.load()) return AbortedReason();
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(call, " did not finish within ",
                                                        absl::FormatDuration(timeout), ": ",
                                                        waited_for, "; aborting the communicator"));
      }
      backoff.Sleep(deadline);
    }
  }

  // Waits until NCCL's own thread has stored a communicator handle into *handle.
  absl::Status AwaitHandle(ncclComm_t* handle, const char* call, absl::Time deadline,
                           absl::Duration timeout) {
    Backoff backoff(max_poll_interval);
    while (__atomic_load_n(handle, __ATOMIC_ACQUIRE) == nullptr) {
      if (poisoned.load()) return AbortedReason();
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            call, " gave this member no communicator within ", absl::FormatDuration(timeout)));
      }
      backoff.Sleep(deadline);
    }
    return absl::OkStatus();
  }

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

namespace {

using State = NcclCommunicator::State;

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<State> state, Event event, std::string what, std::string waited_for,
           absl::Time deadline, absl::Duration timeout)
      : state_(std::move(state)),
        event_(std::move(event)),
        what_(std::move(what)),
        waited_for_(std::move(waited_for)),
        deadline_(deadline),
        timeout_(timeout) {}

  bool IsCompleted() override {
    if (Poll().result.has_value()) return true;
    return absl::Now() >= deadline_;  // Wait reports the timeout
  }

  absl::Status Wait(absl::Duration timeout) override {
    const absl::Time wait_deadline = absl::Now() + timeout;
    Backoff backoff(state_->max_poll_interval);
    for (;;) {
      const Polled polled = Poll();
      if (polled.result.has_value()) {
        if (polled.poison) state_->Poison(*polled.result);
        return Finish(*polled.result);
      }
      const absl::Time now = absl::Now();
      if (now >= deadline_) {
        const absl::Status timed_out = absl::DeadlineExceededError(
            absl::StrCat(what_, ": did not complete within ", absl::FormatDuration(timeout_), ": ",
                         waited_for_, "; aborted the communicator"));
        state_->Poison(timed_out);
        return Finish(timed_out);
      }
      if (now >= wait_deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat(what_, ": Wait gave up after ", absl::FormatDuration(timeout),
                         "; the operation is still running (its own timeout of ",
                         absl::FormatDuration(timeout_), " has not passed)"));
      }
      backoff.Sleep(std::min(deadline_, wait_deadline));
    }
  }

 private:
  struct Polled {
    std::optional<absl::Status> result;  // nullopt: still running
    bool poison = false;                 // the result must poison the communicator
  };

  absl::Status Finish(const absl::Status& result) {
    absl::MutexLock lock(&mu_);
    if (!result_.has_value()) result_ = result;
    return *result_;
  }

  // Never blocks and never aborts.
  Polled Poll() {
    {
      absl::MutexLock lock(&mu_);
      if (result_.has_value()) return {result_, false};
    }
    const cudaError_t query = cudaEventQuery(event_.get());
    if (query == cudaSuccess) {
      // Finished; but after an abort NCCL kernels end early with partial data, and which came
      // first cannot be told: a poisoned communicator fails the operation.
      if (state_->poisoned.load()) return {state_->AbortedError(what_), false};
      return {absl::OkStatus(), false};
    }
    if (query != cudaErrorNotReady) {
      return {Prefixed(what_, CudaToStatus(query, "cudaEventQuery", __FILE__, __LINE__)), true};
    }
    cudaGetLastError();  // cudaErrorNotReady is not an error: do not leave it behind
    if (state_->poisoned.load()) return {state_->AbortedError(what_), false};
    if (std::optional<absl::Status> nccl_error = state_->PeekNcclError(what_)) {
      return {*nccl_error, true};
    }
    return {std::nullopt, false};
  }

  const std::shared_ptr<State> state_;
  const Event event_;
  const std::string what_;
  const std::string waited_for_;
  const absl::Time deadline_;
  const absl::Duration timeout_;

  absl::Mutex mu_;
  std::optional<absl::Status> result_ ABSL_GUARDED_BY(mu_);
};

using Enqueue = absl::FunctionRef<absl::Status(ncclComm_t, cudaStream_t, absl::Time)>;

// Enqueues an operation: `enqueue` issues its NCCL calls and kernels on `stream` (the buffer's, or
// the internal stream for null) under comm_mu, then the completion event is recorded behind them.
// A failure at this point poisons the communicator: the other ranks are inside the collective by
// now and could only time out.
absl::StatusOr<std::unique_ptr<Work>> Launch(const std::shared_ptr<State>& state,
                                             const std::string& what, std::string waited_for,
                                             void* stream_or_null, const CommOptions& options,
                                             Enqueue enqueue) {
  const absl::Time deadline = absl::Now() + options.timeout;
  if (state->poisoned.load()) return state->AbortedError(what);
  cudaStream_t stream = stream_or_null != nullptr ? static_cast<cudaStream_t>(stream_or_null)
                                                  : state->internal_stream;
  Event event;
  const absl::Status status = [&]() -> absl::Status {
    ScopedDevice scoped;
    DT_RETURN_IF_ERROR(scoped.Enter(state->device));
    DT_ASSIGN_OR_RETURN(event, MakeEvent());
    absl::MutexLock lock(&state->comm_mu);
    if (state->comm == nullptr || state->poisoned.load()) return state->AbortedReason();
    DT_RETURN_IF_ERROR(enqueue(state->comm, stream, deadline));
    DT_CUDA_RETURN_IF_ERROR(cudaEventRecord(event.get(), stream));
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    const absl::Status failed = Prefixed(what, status);
    state->Poison(failed);
    return failed;
  }
  return std::unique_ptr<Work>(new NcclWork(state, std::move(event), what, std::move(waited_for),
                                            deadline, options.timeout));
}

// Fills the 4-byte work buffer of a reduction from the caller's `in` (`n` elements of `type`):
// keys for max, f32 values otherwise (nothing to do when `work` is `in` itself and holds f32).
absl::Status PrepareWork(const comm::nccl_internal::ReducePlan& plan, void* work, const void* in,
                         DType type, int64_t n, cudaStream_t stream) {
  if (plan.max_keys) {
    return comm::nccl_internal::ToMaxKeys(static_cast<uint32_t*>(work), in, type, n, stream);
  }
  if (work == in) return absl::OkStatus();
  return kernels::gpu::Cast(work, DType::kF32, in, type, n, stream);
}

// Turns the reduced work buffer into the caller's `out`: from keys for max, divided once for an
// average, narrowed for bf16/f16 (nothing to do for an f32 sum reduced in place).
absl::Status FinishWork(const comm::nccl_internal::ReducePlan& plan, void* out, DType type,
                        const void* work, int64_t n, int size, cudaStream_t stream) {
  if (plan.max_keys) {
    return comm::nccl_internal::FromMaxKeys(out, type, static_cast<const uint32_t*>(work), n,
                                            stream);
  }
  if (plan.divide) {
    return comm::nccl_internal::DivideAndNarrow(out, type, static_cast<const float*>(work), n,
                                                static_cast<float>(size), stream);
  }
  if (work == out) return absl::OkStatus();
  return kernels::gpu::Cast(out, type, work, DType::kF32, n, stream);
}

}  // namespace

NcclCommunicator::NcclCommunicator(std::shared_ptr<State> state, const NcclOptions& options)
    : rank_(state->rank),
      size_(state->size),
      name_(state->name),
      device_(state->device),
      options_(options),
      state_(std::move(state)) {}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    store::Store* store, int rank, int size, absl::string_view name, int device,
    const NcclOptions& options) {
  DT_RETURN_IF_ERROR(comm::nccl_internal::CheckCreateArgs(store != nullptr, rank, size, name,
                                                          device, options.init_timeout));
  const absl::Time deadline = absl::Now() + options.init_timeout;
  const std::string what = absl::StrCat("NcclCommunicator::Create of group '", name, "' (rank ",
                                        rank, " of ", size, ", cuda:", device, ")");
  const std::string key = absl::StrCat("nccl/", name, "/unique_id");

  // The unique id first: on ranks other than 0 a missing rank 0 shows before CUDA is touched.
  ncclUniqueId id;
  if (rank == 0) {
    DT_RETURN_IF_ERROR(Prefixed(what, [&]() -> absl::Status {
      DT_NCCL_RETURN_IF_ERROR(ncclGetUniqueId(&id));
      return absl::OkStatus();
    }()));
    DT_RETURN_IF_ERROR(
        Prefixed(what, store->Set(key, absl::string_view(id.internal, sizeof(id.internal)))));
  } else {
    absl::StatusOr<std::string> value = store->Get(key, deadline - absl::Now());
    if (!value.ok()) {
      return Prefixed(absl::StrCat(what, ": waiting for rank 0's NCCL unique id"), value.status());
    }
    if (value->size() != sizeof(id.internal)) {
      return absl::InternalError(absl::StrCat(what, ": the Store's value of \"", key, "\" has ",
                                              value->size(), " bytes; an ncclUniqueId has ",
                                              sizeof(id.internal)));
    }
    std::copy(value->begin(), value->end(), id.internal);
  }

  ScopedDevice scoped;
  DT_RETURN_IF_ERROR(Prefixed(what, scoped.Enter(device)));
  auto state =
      std::make_shared<State>(std::string(name), rank, size, device, options.max_poll_interval);
  ncclConfig_t config = NonBlockingConfig(state->name);
  absl::Status status;
  {
    absl::MutexLock lock(&state->comm_mu);
    const ncclResult_t result = ncclCommInitRankConfig(&state->comm, size, id, rank, &config);
    if (result != ncclSuccess && result != ncclInProgress) {
      state->comm = nullptr;  // failed before NCCL made one (NCCL frees what it allocated)
    }
    status = state->AwaitNccl(state->comm, result, "ncclCommInitRankConfig", deadline,
                              options.init_timeout,
                              "not every rank of the group joined (NCCL cannot tell which rank "
                              "is missing)");
  }
  if (status.ok()) status = state->InitResources();
  if (!status.ok()) {
    status = Prefixed(what, status);
    state->Poison(status);  // aborts the half-made NCCL communicator
    return status;
  }
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(state), options));
}

NcclCommunicator::~NcclCommunicator() {
  absl::MutexLock lock(&state_->comm_mu);
  if (state_->comm == nullptr) return;
  ScopedDevice scoped;
  scoped.Enter(device_).IgnoreError();
  const absl::Time deadline = absl::Now() + options_.destroy_timeout;
  const absl::Status status =
      state_->AwaitNccl(state_->comm, ncclCommFinalize(state_->comm), "ncclCommFinalize", deadline,
                        options_.destroy_timeout, "operations in flight did not finish");
  if (status.ok()) {
    ncclCommDestroy(state_->comm);
  } else {
    // Operations still in flight cannot complete correctly any more: fail their Work.
    {
      absl::MutexLock error_lock(&state_->error_mu);
      if (state_->error.ok()) {
        state_->error =
            Prefixed(absl::StrCat("destroying the communicator of group '", name_, "'"), status);
      }
      state_->poisoned.store(true);
    }
    ncclCommAbort(state_->comm);
  }
  state_->comm = nullptr;
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::AllReduce(CommBuffer buffer, ReduceOp op,
                                                                  const CommOptions& options) {
  const std::string op_name = absl::StrCat("AllReduce(", ReduceOpName(op), ")");
  DT_RETURN_IF_ERROR(
      comm::nccl_internal::CheckAllReduceArgs(*this, device_, op_name, buffer, op, options));
  const std::string what = OpDescription(
      *this, absl::StrCat(op_name, " of ", comm::nccl_internal::DescribeBuffer(buffer)));
  DT_ASSIGN_OR_RETURN(const DType type, comm::nccl_internal::CastType(buffer.dtype));
  const comm::nccl_internal::ReducePlan plan =
      comm::nccl_internal::PlanReduction(buffer.dtype, op, size_);
  State* state = state_.get();
  return Launch(
      state_, what, std::string(kCollectiveWaitedFor), buffer.stream, options,
      [&](ncclComm_t comm, cudaStream_t stream, absl::Time deadline) -> absl::Status {
        const int64_t n = buffer.count;
        if (n == 0) return absl::OkStatus();
        StreamScratch scratch;
        void* work = buffer.data;
        if (plan.all_reduce_scratch) {
          DT_RETURN_IF_ERROR(scratch.Allocate(n * kWorkElementBytes, state->scratch_pool, stream));
          work = scratch.get();
        }
        DT_RETURN_IF_ERROR(PrepareWork(plan, work, buffer.data, type, n, stream));
        DT_RETURN_IF_ERROR(
            state->AwaitNccl(comm,
                             ncclAllReduce(work, work, static_cast<size_t>(n),
                                           plan.max_keys ? ncclUint32 : ncclFloat32,
                                           plan.max_keys ? ncclMax : ncclSum, comm, stream),
                             "ncclAllReduce", deadline, options.timeout, kCollectiveWaitedFor));
        return FinishWork(plan, buffer.data, type, work, n, state->size, stream);
      });
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::ReduceScatter(CommBuffer input,
                                                                      CommBuffer output,
                                                                      ReduceOp op,
                                                                      const CommOptions& options) {
  const std::string op_name = absl::StrCat("ReduceScatter(", ReduceOpName(op), ")");
  DT_RETURN_IF_ERROR(comm::nccl_internal::CheckReduceScatterArgs(*this, device_, op_name, input,
                                                                 output, op, options));
  DT_ASSIGN_OR_RETURN(void* stream_or_null,
                      comm::nccl_internal::CommonStream(*this, op_name, input, output));
  const std::string what = OpDescription(
      *this, absl::StrCat(op_name, " of ", comm::nccl_internal::DescribeBuffer(input)));
  DT_ASSIGN_OR_RETURN(const DType type, comm::nccl_internal::CastType(input.dtype));
  const comm::nccl_internal::ReducePlan plan =
      comm::nccl_internal::PlanReduction(input.dtype, op, size_);
  State* state = state_.get();
  return Launch(state_, what, std::string(kCollectiveWaitedFor), stream_or_null, options,
                [&](ncclComm_t comm, cudaStream_t stream, absl::Time deadline) -> absl::Status {
                  const int64_t n = output.count;
                  if (n == 0) return absl::OkStatus();
                  StreamScratch scratch;
                  const void* work_in = input.data;
                  void* work_out = output.data;
                  if (plan.reduce_scatter_scratch) {
                    // One scratch buffer, reduced in place: this rank's chunk is reduced where it
                    // lies.
                    DT_RETURN_IF_ERROR(scratch.Allocate(input.count * kWorkElementBytes,
                                                        state->scratch_pool, stream));
                    DT_RETURN_IF_ERROR(
                        PrepareWork(plan, scratch.get(), input.data, type, input.count, stream));
                    work_in = scratch.get();
                    work_out =
                        scratch.get() + static_cast<int64_t>(state->rank) * n * kWorkElementBytes;
                  }
                  DT_RETURN_IF_ERROR(state->AwaitNccl(
                      comm,
                      ncclReduceScatter(work_in, work_out, static_cast<size_t>(n),
                                        plan.max_keys ? ncclUint32 : ncclFloat32,
                                        plan.max_keys ? ncclMax : ncclSum, comm, stream),
                      "ncclReduceScatter", deadline, options.timeout, kCollectiveWaitedFor));
                  return FinishWork(plan, output.data, type, work_out, n, state->size, stream);
                });
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::AllGather(CommBuffer input,
                                                                  CommBuffer output,
                                                                  const CommOptions& options) {
  DT_RETURN_IF_ERROR(
      comm::nccl_internal::CheckAllGatherArgs(*this, device_, "AllGather", input, output, options));
  DT_ASSIGN_OR_RETURN(void* stream_or_null,
                      comm::nccl_internal::CommonStream(*this, "AllGather", input, output));
  const std::string what = OpDescription(
      *this, absl::StrCat("AllGather of ", comm::nccl_internal::DescribeBuffer(input)));
  DT_ASSIGN_OR_RETURN(const comm::nccl_internal::NcclCopyType type,
                      comm::nccl_internal::NcclCopyTypeOf(input.dtype));
  State* state = state_.get();
  return Launch(state_, what, std::string(kCollectiveWaitedFor), stream_or_null, options,
                [&](ncclComm_t comm, cudaStream_t stream, absl::Time deadline) -> absl::Status {
                  if (input.count == 0) return absl::OkStatus();
                  const size_t count = static_cast<size_t>(input.count * type.per_element);
                  return state->AwaitNccl(
                      comm, ncclAllGather(input.data, output.data, count, type.type, comm, stream),
                      "ncclAllGather", deadline, options.timeout, kCollectiveWaitedFor);
                });
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Broadcast(CommBuffer buffer, int root,
                                                                  const CommOptions& options) {
  const std::string op_name = absl::StrCat("Broadcast(root ", root, ")");
  DT_RETURN_IF_ERROR(
      comm::nccl_internal::CheckBroadcastArgs(*this, device_, op_name, buffer, root, options));
  const std::string what = OpDescription(
      *this, absl::StrCat(op_name, " of ", comm::nccl_internal::DescribeBuffer(buffer)));
  DT_ASSIGN_OR_RETURN(const comm::nccl_internal::NcclCopyType type,
                      comm::nccl_internal::NcclCopyTypeOf(buffer.dtype));
  State* state = state_.get();
  return Launch(state_, what, std::string(kCollectiveWaitedFor), buffer.stream, options,
                [&](ncclComm_t comm, cudaStream_t stream, absl::Time deadline) -> absl::Status {
                  if (buffer.count == 0) return absl::OkStatus();
                  const size_t count = static_cast<size_t>(buffer.count * type.per_element);
                  return state->AwaitNccl(
                      comm,
                      ncclBroadcast(buffer.data, buffer.data, count, type.type, root, comm, stream),
                      "ncclBroadcast", deadline, options.timeout, kCollectiveWaitedFor);
                });
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Send(CommBuffer buffer, int dst, int tag,
                                                             const CommOptions& options) {
  const std::string op_name = absl::StrCat("Send(to rank ", dst, ", tag ", tag, ")");
  DT_RETURN_IF_ERROR(comm::nccl_internal::CheckPointToPointArgs(*this, device_, op_name, buffer,
                                                                dst, "dst", options));
  const std::string what = OpDescription(
      *this, absl::StrCat(op_name, " of ", comm::nccl_internal::DescribeBuffer(buffer)));
  DT_ASSIGN_OR_RETURN(const comm::nccl_internal::NcclCopyType type,
                      comm::nccl_internal::NcclCopyTypeOf(buffer.dtype));
  const std::string waited_for = PeerWaitedFor(dst, "Recv");
  State* state = state_.get();
  return Launch(state_, what, waited_for, buffer.stream, options,
                [&](ncclComm_t comm, cudaStream_t stream, absl::Time deadline) -> absl::Status {
                  if (buffer.count == 0) return absl::OkStatus();
                  const size_t count = static_cast<size_t>(buffer.count * type.per_element);
                  return state->AwaitNccl(
                      comm, ncclSend(buffer.data, count, type.type, dst, comm, stream), "ncclSend",
                      deadline, options.timeout, waited_for);
                });
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Recv(CommBuffer buffer, int src, int tag,
                                                             const CommOptions& options) {
  const std::string op_name = absl::StrCat("Recv(from rank ", src, ", tag ", tag, ")");
  DT_RETURN_IF_ERROR(comm::nccl_internal::CheckPointToPointArgs(*this, device_, op_name, buffer,
                                                                src, "src", options));
  const std::string what = OpDescription(
      *this, absl::StrCat(op_name, " of ", comm::nccl_internal::DescribeBuffer(buffer)));
  DT_ASSIGN_OR_RETURN(const comm::nccl_internal::NcclCopyType type,
                      comm::nccl_internal::NcclCopyTypeOf(buffer.dtype));
  const std::string waited_for = PeerWaitedFor(src, "Send");
  State* state = state_.get();
  return Launch(state_, what, waited_for, buffer.stream, options,
                [&](ncclComm_t comm, cudaStream_t stream, absl::Time deadline) -> absl::Status {
                  if (buffer.count == 0) return absl::OkStatus();
                  const size_t count = static_cast<size_t>(buffer.count * type.per_element);
                  return state->AwaitNccl(
                      comm, ncclRecv(buffer.data, count, type.type, src, comm, stream), "ncclRecv",
                      deadline, options.timeout, waited_for);
                });
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Barrier(const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckOptions(*this, "Barrier", options));
  const std::string what = OpDescription(*this, "Barrier");
  State* state = state_.get();
  // Max of zeros: the element stays 0 however many barriers run.
  return Launch(
      state_, what, std::string(kCollectiveWaitedFor), /*stream_or_null=*/nullptr, options,
      [&](ncclComm_t comm, cudaStream_t stream, absl::Time deadline) -> absl::Status {
        return state->AwaitNccl(comm,
                                ncclAllReduce(state->barrier_scratch, state->barrier_scratch, 1,
                                              ncclFloat32, ncclMax, comm, stream),
                                "ncclAllReduce", deadline, options.timeout, kCollectiveWaitedFor);
      });
}

void NcclCommunicator::Abort(absl::Status reason) {
  if (reason.ok()) {
    reason = absl::AbortedError(absl::StrCat("Abort of group '", name_, "' without a reason"));
  }
  state_->Poison(reason);
}

absl::Status NcclCommunicator::AsyncError() {
  if (state_->poisoned.load()) return state_->FirstError();
  if (std::optional<absl::Status> nccl_error =
          state_->PeekNcclError(OpDescription(*this, "AsyncError"))) {
    state_->Poison(*nccl_error);
  }
  return state_->FirstError();
}

absl::StatusOr<std::unique_ptr<Communicator>> NcclCommunicator::Split(const std::vector<int>& ranks,
                                                                      absl::string_view name,
                                                                      const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckSplitRanks(*this, ranks, name));
  const std::string what = OpDescription(*this, absl::StrCat("Split('", name, "')"));
  DT_RETURN_IF_ERROR(CheckOptions(*this, absl::StrCat("Split('", name, "')"), options));
  if (state_->poisoned.load()) return state_->AbortedError(what);
  const auto member = std::find(ranks.begin(), ranks.end(), rank_);
  const bool is_member = member != ranks.end();
  const int new_rank = is_member ? static_cast<int>(member - ranks.begin()) : 0;
  const absl::Time deadline = absl::Now() + options.timeout;

  auto child = std::make_shared<State>(std::string(name), new_rank, static_cast<int>(ranks.size()),
                                       device_, options_.max_poll_interval);
  ncclConfig_t config = NonBlockingConfig(child->name);
  const absl::Status status = [&]() -> absl::Status {
    ScopedDevice scoped;
    DT_RETURN_IF_ERROR(scoped.Enter(device_));
    absl::MutexLock lock(&state_->comm_mu);
    if (state_->comm == nullptr || state_->poisoned.load()) return state_->AbortedReason();
    absl::MutexLock child_lock(&child->comm_mu);
    // NCCL may write the new handle from its own thread: child->comm is read only once the
    // parent's state left ncclInProgress.
    const ncclResult_t result = ncclCommSplit(state_->comm, is_member ? 0 : NCCL_SPLIT_NOCOLOR,
                                              is_member ? new_rank : rank_, &child->comm, &config);
    if (result != ncclSuccess && result != ncclInProgress) child->comm = nullptr;
    DT_RETURN_IF_ERROR(state_->AwaitNccl(state_->comm, result, "ncclCommSplit", deadline,
                                         options.timeout, kCollectiveWaitedFor));
    // Newer NCCL (2.2x, seen with the one beside PyTorch 2.11) stores the member's handle from its
    // init thread only when the split job is done, which the parent's state may not wait for.
    if (is_member) {
      DT_RETURN_IF_ERROR(
          child->AwaitHandle(&child->comm, "ncclCommSplit", deadline, options.timeout));
    }
    if (child->comm != nullptr) {
      DT_RETURN_IF_ERROR(child->AwaitNccl(child->comm, ncclInProgress, "ncclCommSplit", deadline,
                                          options.timeout, kCollectiveWaitedFor));
    }
    if (is_member && child->comm == nullptr) {
      return absl::InternalError("ncclCommSplit gave this member no communicator");
    }
    if (is_member) DT_RETURN_IF_ERROR(child->InitResources());
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    const absl::Status failed = Prefixed(what, status);
    state_->Poison(failed);  // first: NCCL's split job runs on the parent
    child->Poison(failed);
    return failed;
  }
  if (!is_member) {
    child->Poison(absl::AbortedError("not a member"));  // aborts a stray handle, if NCCL made one
    return std::unique_ptr<Communicator>();
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(child), options_));
}

}  // namespace dstrain::comm
