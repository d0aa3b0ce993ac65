#include "worker/comm/gloo/gloo_communicator.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/comm/gloo/allgather_ring.h"
#include "worker/comm/gloo/allreduce_ring.h"
#include "worker/comm/gloo/barrier.h"
#include "worker/comm/gloo/broadcast.h"
#include "worker/comm/gloo/gloo_runtime.h"
#include "worker/comm/gloo/reduce_scatter_ring.h"

namespace dstrain::comm {

using gloo_internal::Runner;
using gloo_internal::Runtime;

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    store::Store* store, int rank, int size, absl::string_view name, const GlooOptions& options) {
  if (store == nullptr) return absl::InvalidArgumentError("GlooCommunicator: null store");
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("GlooCommunicator: rank ", rank, " of ", size, " is not a valid rank"));
  }
  if (name.empty()) return absl::InvalidArgumentError("GlooCommunicator: empty group name");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("GlooCommunicator: timeout must be positive");
  }
  DT_ASSIGN_OR_RETURN(std::unique_ptr<Runtime> runtime,
                      Runtime::Connect(store, absl::StrCat("gloo/", name), rank, size,
                                       std::string(name), options, nullptr));
  return std::unique_ptr<GlooCommunicator>(new GlooCommunicator(std::move(runtime)));
}

GlooCommunicator::GlooCommunicator(std::unique_ptr<Runtime> runtime)
    : runtime_(std::move(runtime)) {}

GlooCommunicator::~GlooCommunicator() = default;

int GlooCommunicator::rank() const { return runtime_->rank(); }
int GlooCommunicator::size() const { return runtime_->size(); }
const std::string& GlooCommunicator::name() const { return runtime_->name(); }

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::AllReduce(CommBuffer buffer, ReduceOp op,
                                                                  const CommOptions& options) {
  constexpr absl::string_view kOp = "AllReduce";
  DT_RETURN_IF_ERROR(CheckAllReduceArgs(*this, buffer, options, DeviceType::kCpu));
  return runtime_->Enqueue(kOp, options.timeout, [buffer, op](Runner& run) {
    return gloo_internal::RunAllReduce(run, buffer, op);
  });
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::ReduceScatter(CommBuffer input,
                                                                      CommBuffer output,
                                                                      ReduceOp op,
                                                                      const CommOptions& options) {
  constexpr absl::string_view kOp = "ReduceScatter";
  DT_RETURN_IF_ERROR(CheckReduceScatterArgs(*this, input, output, options, DeviceType::kCpu));
  return runtime_->Enqueue(kOp, options.timeout, [input, output, op](Runner& run) {
    return gloo_internal::RunReduceScatter(run, input, output, op);
  });
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::AllGather(CommBuffer input,
                                                                  CommBuffer output,
                                                                  const CommOptions& options) {
  constexpr absl::string_view kOp = "AllGather";
  DT_RETURN_IF_ERROR(CheckAllGatherArgs(*this, input, output, options, DeviceType::kCpu));
  return runtime_->Enqueue(kOp, options.timeout, [input, output](Runner& run) {
    return gloo_internal::RunAllGather(run, input, output);
  });
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::Broadcast(CommBuffer buffer, int root,
                                                                  const CommOptions& options) {
  constexpr absl::string_view kOp = "Broadcast";
  DT_RETURN_IF_ERROR(CheckBroadcastArgs(*this, buffer, root, options, DeviceType::kCpu));
  return runtime_->Enqueue(kOp, options.timeout, [buffer, root](Runner& run) {
    return gloo_internal::RunBroadcast(run, buffer, root);
  });
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::Send(CommBuffer buffer, int dst, int tag,
                                                             const CommOptions& options) {
  constexpr absl::string_view kOp = "Send";
  DT_RETURN_IF_ERROR(
      CheckPointToPointArgs(*this, kOp, buffer, dst, "dst", options, DeviceType::kCpu));
  return runtime_->PostP2P(/*send=*/true, buffer, dst, tag, options.timeout);
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::Recv(CommBuffer buffer, int src, int tag,
                                                             const CommOptions& options) {
  constexpr absl::string_view kOp = "Recv";
  DT_RETURN_IF_ERROR(
      CheckPointToPointArgs(*this, kOp, buffer, src, "src", options, DeviceType::kCpu));
  return runtime_->PostP2P(/*send=*/false, buffer, src, tag, options.timeout);
}

absl::StatusOr<std::unique_ptr<Work>> GlooCommunicator::Barrier(const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckOptions(*this, "Barrier", options));
  return runtime_->Enqueue("Barrier", options.timeout,
                           [](Runner& run) { return gloo_internal::RunBarrier(run); });
}

void GlooCommunicator::Abort(absl::Status reason) { runtime_->Abort(reason); }

absl::Status GlooCommunicator::AsyncError() { return runtime_->AsyncError(); }

absl::StatusOr<std::unique_ptr<Communicator>> GlooCommunicator::Split(const std::vector<int>& ranks,
                                                                      absl::string_view name,
                                                                      const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckSplitRanks(*this, ranks, name));
  DT_RETURN_IF_ERROR(CheckOptions(*this, "Split", options));
  DT_ASSIGN_OR_RETURN(std::unique_ptr<Runtime> child, runtime_->Split(ranks, name, options));
  if (child == nullptr) return std::unique_ptr<Communicator>();  // not a member
  return std::unique_ptr<Communicator>(new GlooCommunicator(std::move(child)));
}

}  // namespace dstrain::comm
