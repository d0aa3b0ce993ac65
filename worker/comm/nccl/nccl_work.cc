// Launch and the Work it returns: an operation enqueued on its stream under comm_mu, completed by
// a CUDA event, and bounded by its deadline (NOTE [NCCL streams and completion] and NOTE [NCCL
// timeouts] in nccl_communicator.h).
#include <cuda_runtime.h>
#include <nccl.h>

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/comm/nccl/nccl_state.h"

namespace dstrain::comm::nccl_internal {
namespace {

using kernels::gpu::CudaToStatus;
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

}  // namespace

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

}  // namespace dstrain::comm::nccl_internal
