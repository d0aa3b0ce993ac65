#include "worker/comm/nccl/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status/status_macros.h"
#include "worker/comm/nccl/nccl_args.h"
#include "worker/comm/nccl/nccl_state.h"
#include "worker/comm/nccl/nccl_status.h"

namespace dstrain::comm {

using nccl_internal::kCollectiveWaitedFor;
using nccl_internal::NonBlockingConfig;
using nccl_internal::Prefixed;
using nccl_internal::ScopedDevice;

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
