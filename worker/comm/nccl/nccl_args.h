// Argument checks and type mapping for NcclCommunicator. Nothing here calls CUDA or NCCL, so these
// run (and are unit-tested) on machines without a GPU, and NcclCommunicator calls them before it
// touches the device: a bad argument is kInvalidArgument naming the operation and the group (the
// shared checks of communicator.h, with the same messages as every backend, plus NCCL's own), and
// leaves the communicator healthy: it is the caller's bug, not a failed collective.
//
// Internal to worker/comm/nccl; thread-safe (pure functions).
#pragma once

#include <nccl.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/types/dtype.h"
#include "worker/comm/communicator.h"
#include "worker/tensor/tensor.h"

namespace dstrain::comm::nccl_internal {

// NCCL's element type for data movement (gathers, broadcasts, point-to-point), which takes any
// dtype: u16 has no NCCL type and moves as two ncclUint8 per element.
struct NcclCopyType {
  ncclDataType_t type = ncclUint8;
  int64_t per_element = 1;  // NCCL elements per dstrain element
};
absl::StatusOr<NcclCopyType> NcclCopyTypeOf(DType dtype);

// The cast kernels' type for f32, bf16 and f16; kInvalidArgument for other dtypes.
absl::StatusOr<DType> CastType(DType dtype);

// How a reduction runs (NOTE [NCCL reductions] in nccl_communicator.h). NCCL reduces a "work"
// buffer of 4-byte elements: f32 values for sums and averages, order-preserving uint32 keys for
// max. The work buffer is the caller's own buffer where that is possible, else a scratch buffer.
struct ReducePlan {
  bool max_keys = false;            // max over uint32 keys (ncclMax on ncclUint32), NaN-propagating
  bool divide = false;              // kAvg with size > 1: sum, then divide by size once
  bool all_reduce_scratch = false;  // AllReduce: a scratch work buffer (bf16/f16)
  bool reduce_scatter_scratch =
      false;  // ReduceScatter: a scratch work buffer (all but f32 sum/avg)
};
// REQUIRES: dtype is f32, bf16 or f16; size >= 1.
ReducePlan PlanReduction(DType dtype, ReduceOp op, int size);

// "1000 x bf16"
std::string DescribeBuffer(const CommBuffer& b);

// The checks. `op` is the operation's name as it appears in messages ("AllReduce(sum)");
// `device` is the communicator's CUDA device.

// A CUDA buffer on `device` (CheckDevice, and the device index).
absl::Status CheckCudaBuffer(const Communicator& c, int device, absl::string_view op,
                             const CommBuffer& b);
// kSum, kAvg or kMax.
absl::Status CheckReduceOp(const Communicator& c, absl::string_view op, ReduceOp reduce_op);
// Options, then a reducible buffer on `device` and a valid ReduceOp.
absl::Status CheckAllReduceArgs(const Communicator& c, int device, absl::string_view op,
                                const CommBuffer& buffer, ReduceOp reduce_op,
                                const CommOptions& options);
// Options, both buffers on `device`, reducible, input.count == size * output.count, one stream.
absl::Status CheckReduceScatterArgs(const Communicator& c, int device, absl::string_view op,
                                    const CommBuffer& input, const CommBuffer& output,
                                    ReduceOp reduce_op, const CommOptions& options);
// Options, both buffers on `device`, output.count == size * input.count, one stream.
absl::Status CheckAllGatherArgs(const Communicator& c, int device, absl::string_view op,
                                const CommBuffer& input, const CommBuffer& output,
                                const CommOptions& options);
// Options, the buffer on `device`, root a rank of the group.
absl::Status CheckBroadcastArgs(const Communicator& c, int device, absl::string_view op,
                                const CommBuffer& buffer, int root, const CommOptions& options);
// Options, the buffer on `device`, peer a rank of the group other than this one (`what`: "dst"
// or "src").
absl::Status CheckPointToPointArgs(const Communicator& c, int device, absl::string_view op,
                                   const CommBuffer& buffer, int peer, absl::string_view what,
                                   const CommOptions& options);
// Arguments of NcclCommunicator::Create: a store, 1 <= size, 0 <= rank < size, a non-empty name,
// device >= 0, a positive init timeout.
absl::Status CheckCreateArgs(bool has_store, int rank, int size, absl::string_view name, int device,
                             absl::Duration init_timeout);

// The stream of an operation with two buffers: the non-null one of the two (null when both are);
// kInvalidArgument when both are set and differ (the communicator would have to order two streams
// it does not own).
absl::StatusOr<void*> CommonStream(const Communicator& c, absl::string_view op,
                                   const CommBuffer& input, const CommBuffer& output);

}  // namespace dstrain::comm::nccl_internal
