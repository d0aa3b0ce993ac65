#include "worker/comm/nccl/nccl_args.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace dstrain::comm::nccl_internal {
namespace {

absl::Status Invalid(const Communicator& c, absl::string_view op, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(OpDescription(c, op), ": ", problem));
}

}  // namespace

absl::StatusOr<NcclCopyType> NcclCopyTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return NcclCopyType{ncclFloat32, 1};
    case DType::kBF16:
      return NcclCopyType{ncclBfloat16, 1};
    case DType::kF16:
      return NcclCopyType{ncclFloat16, 1};
    case DType::kI32:
      return NcclCopyType{ncclInt32, 1};
    case DType::kU16:
      return NcclCopyType{ncclUint8, 2};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype ", static_cast<int>(dtype), " for NCCL"));
}

absl::StatusOr<DType> CastType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return DType::kF32;
    case DType::kBF16:
      return DType::kBF16;
    case DType::kF16:
      return DType::kF16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("no cast kernel for ", DTypeName(dtype), " (f32, bf16 or f16 only)"));
  }
}

ReducePlan PlanReduction(DType dtype, ReduceOp op, int size) {
  ReducePlan plan;
  plan.max_keys = op == ReduceOp::kMax;
  plan.divide = op == ReduceOp::kAvg && size > 1;
  const bool f32 = dtype == DType::kF32;
  // f32 max turns the AllReduce buffer into keys in place; ReduceScatter's input is read-only.
  plan.all_reduce_scratch = !f32;
  plan.reduce_scatter_scratch = !f32 || plan.max_keys;
  return plan;
}

std::string DescribeBuffer(const CommBuffer& b) {
  return absl::StrCat(b.count, " x ", DTypeName(b.dtype));
}

absl::Status CheckCudaBuffer(const Communicator& c, int device, absl::string_view op,
                             const CommBuffer& b) {
  if (absl::Status s = CheckDevice(c, op, b, DeviceType::kCuda); !s.ok()) return s;
  if (b.device.index != device) {
    return Invalid(
        c, op,
        absl::StrCat("buffer on cuda:", b.device.index, "; this communicator uses cuda:", device));
  }
  return absl::OkStatus();
}

absl::Status CheckReduceOp(const Communicator& c, absl::string_view op, ReduceOp reduce_op) {
  switch (reduce_op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
    case ReduceOp::kMax:
      return absl::OkStatus();
  }
  return Invalid(c, op, absl::StrCat("unknown ReduceOp ", static_cast<int>(reduce_op)));
}

absl::Status CheckAllReduceArgs(const Communicator& c, int device, absl::string_view op,
                                const CommBuffer& buffer, ReduceOp reduce_op,
                                const CommOptions& options) {
  if (absl::Status s = CheckOptions(c, op, options); !s.ok()) return s;
  if (absl::Status s = CheckReduceBuffer(c, op, buffer); !s.ok()) return s;
  if (absl::Status s = CheckCudaBuffer(c, device, op, buffer); !s.ok()) return s;
  return CheckReduceOp(c, op, reduce_op);
}

absl::Status CheckReduceScatterArgs(const Communicator& c, int device, absl::string_view op,
                                    const CommBuffer& input, const CommBuffer& output,
                                    ReduceOp reduce_op, const CommOptions& options) {
  if (absl::Status s = CheckOptions(c, op, options); !s.ok()) return s;
  if (absl::Status s = CheckReduceBuffer(c, op, input); !s.ok()) return s;
  if (absl::Status s = CheckReduceBuffer(c, op, output); !s.ok()) return s;
  if (absl::Status s = CheckChunked(c, op, input, output); !s.ok()) return s;
  if (absl::Status s = CheckCudaBuffer(c, device, op, input); !s.ok()) return s;
  if (absl::Status s = CheckCudaBuffer(c, device, op, output); !s.ok()) return s;
  if (absl::Status s = CheckReduceOp(c, op, reduce_op); !s.ok()) return s;
  return CommonStream(c, op, input, output).status();
}

absl::Status CheckAllGatherArgs(const Communicator& c, int device, absl::string_view op,
                                const CommBuffer& input, const CommBuffer& output,
                                const CommOptions& options) {
  if (absl::Status s = CheckOptions(c, op, options); !s.ok()) return s;
  if (absl::Status s = CheckBuffer(c, op, input); !s.ok()) return s;
  if (absl::Status s = CheckBuffer(c, op, output); !s.ok()) return s;
  if (absl::Status s = CheckChunked(c, op, output, input); !s.ok()) return s;
  if (absl::Status s = CheckCudaBuffer(c, device, op, input); !s.ok()) return s;
  if (absl::Status s = CheckCudaBuffer(c, device, op, output); !s.ok()) return s;
  if (absl::Status s = NcclCopyTypeOf(input.dtype).status(); !s.ok())
    return Invalid(c, op, s.message());
  return CommonStream(c, op, input, output).status();
}

absl::Status CheckBroadcastArgs(const Communicator& c, int device, absl::string_view op,
                                const CommBuffer& buffer, int root, const CommOptions& options) {
  if (absl::Status s = CheckOptions(c, op, options); !s.ok()) return s;
  if (absl::Status s = CheckBuffer(c, op, buffer); !s.ok()) return s;
  if (absl::Status s = CheckCudaBuffer(c, device, op, buffer); !s.ok()) return s;
  if (absl::Status s = NcclCopyTypeOf(buffer.dtype).status(); !s.ok())
    return Invalid(c, op, s.message());
  return CheckPeer(c, op, root, "root", /*allow_self=*/true);
}

absl::Status CheckPointToPointArgs(const Communicator& c, int device, absl::string_view op,
                                   const CommBuffer& buffer, int peer, absl::string_view what,
                                   const CommOptions& options) {
  if (absl::Status s = CheckOptions(c, op, options); !s.ok()) return s;
  if (absl::Status s = CheckBuffer(c, op, buffer); !s.ok()) return s;
  if (absl::Status s = CheckCudaBuffer(c, device, op, buffer); !s.ok()) return s;
  if (absl::Status s = NcclCopyTypeOf(buffer.dtype).status(); !s.ok())
    return Invalid(c, op, s.message());
  return CheckPeer(c, op, peer, what, /*allow_self=*/false);
}

absl::Status CheckCreateArgs(bool has_store, int rank, int size, absl::string_view name, int device,
                             absl::Duration init_timeout) {
  const std::string where = absl::StrCat("NcclCommunicator::Create of group '", name, "'");
  if (!has_store) return absl::InvalidArgumentError(absl::StrCat(where, ": null store"));
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": empty name"));
  if (size < 1) return absl::InvalidArgumentError(absl::StrCat(where, ": size ", size, " < 1"));
  if (rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": rank ", rank, " is outside [0, ", size, ")"));
  }
  if (device < 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": device ", device, " < 0"));
  }
  if (init_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": init_timeout must be positive, got ",
                                                   absl::FormatDuration(init_timeout)));
  }
  return absl::OkStatus();
}

absl::StatusOr<void*> CommonStream(const Communicator& c, absl::string_view op,
                                   const CommBuffer& input, const CommBuffer& output) {
  if (input.stream != nullptr && output.stream != nullptr && input.stream != output.stream) {
    return Invalid(c, op, "input and output come with different streams");
  }
  return input.stream != nullptr ? input.stream : output.stream;
}

}  // namespace dstrain::comm::nccl_internal
