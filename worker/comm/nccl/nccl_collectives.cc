// NcclCommunicator's operations: the reductions through their 4-byte work buffers (NOTE [NCCL
// reductions] in nccl_communicator.h), the copies, point-to-point and Barrier. Each checks its
// arguments, then hands Launch the NCCL calls and kernels to enqueue.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "kernels/cast/cuda/cast_cuda.h"
#include "worker/comm/nccl/nccl_args.h"
#include "worker/comm/nccl/nccl_state.h"
#include "worker/comm/nccl/reduce_kernels.h"

namespace dstrain::comm {
namespace {

using nccl_internal::kCollectiveWaitedFor;
using nccl_internal::kWorkElementBytes;
using nccl_internal::Launch;
using nccl_internal::PeerWaitedFor;
using nccl_internal::StreamScratch;

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

}  // namespace dstrain::comm
