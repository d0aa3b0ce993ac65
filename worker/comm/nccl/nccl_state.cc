// NcclCommunicator::State: the first error, poisoning and abort, and the bounded waits on NCCL's
// non-blocking calls (NOTE [NCCL timeouts] in nccl_communicator.h); and the shared CUDA helpers.
#include "worker/comm/nccl/nccl_state.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/comm/nccl/nccl_status.h"

namespace dstrain::comm {
namespace nccl_internal {

std::string PeerWaitedFor(int peer, absl::string_view partner) {
  return absl::StrCat("rank ", peer, " did not arrive with the matching ", partner,
                      ", or is stuck");
}

absl::Status Prefixed(absl::string_view what, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(what, ": ", status.message()));
}

absl::StatusOr<Event> MakeEvent() {
  cudaEvent_t event = nullptr;
  DT_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return Event(event);
}

ncclConfig_t NonBlockingConfig(const std::string& name) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  config.commName = name.c_str();
  return config;
}

}  // namespace nccl_internal

using nccl_internal::Backoff;
using nccl_internal::Prefixed;
using nccl_internal::ScopedDevice;

NcclCommunicator::State::~State() {
  ScopedDevice scoped;
  scoped.Enter(device).IgnoreError();
  if (scratch_pool != nullptr) cudaMemPoolDestroy(scratch_pool);  // deferred while in use
  if (barrier_scratch != nullptr) cudaFree(barrier_scratch);
  if (internal_stream != nullptr) cudaStreamDestroy(internal_stream);
}

absl::Status NcclCommunicator::State::InitResources() {
  DT_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&internal_stream));  // blocking: see nccl_communicator.h
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

absl::Status NcclCommunicator::State::FirstError() {
  absl::MutexLock lock(&error_mu);
  return error;
}

absl::Status NcclCommunicator::State::AbortedReason() {
  return absl::AbortedError(
      absl::StrCat("the communicator of group '", name, "' is aborted: ", FirstError().ToString()));
}

absl::Status NcclCommunicator::State::AbortedError(absl::string_view what) {
  return Prefixed(what, AbortedReason());
}

void NcclCommunicator::State::Poison(const absl::Status& cause) {
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

std::optional<absl::Status> NcclCommunicator::State::PeekNcclError(absl::string_view what) {
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

absl::Status NcclCommunicator::State::AwaitNccl(ncclComm_t nccl, ncclResult_t result,
                                                const char* call, absl::Time deadline,
                                                absl::Duration timeout,
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

absl::Status NcclCommunicator::State::AwaitHandle(ncclComm_t* handle, const char* call,
                                                  absl::Time deadline, absl::Duration timeout) {
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

}  // namespace dstrain::comm
