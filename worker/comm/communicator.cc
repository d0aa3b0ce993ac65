#include "worker/comm/communicator.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status/status_macros.h"

namespace dstrain::comm {
namespace {

absl::Status Invalid(const Communicator& c, absl::string_view op, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(OpDescription(c, op), ": ", what));
}

}  // namespace

absl::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

namespace {

class PlainHostBuffer final : public HostBuffer {
 public:
  PlainHostBuffer(void* data, int64_t bytes) : data_(data), bytes_(bytes) {}
  ~PlainHostBuffer() override { std::free(data_); }
  void* data() const override { return data_; }
  int64_t bytes() const override { return bytes_; }

 private:
  void* const data_;
  const int64_t bytes_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<HostBuffer>> Communicator::AllocateHostBuffer(
    int64_t bytes, const CommOptions& options) {
  if (bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(OpDescription(*this, "AllocateHostBuffer"), ": bytes ", bytes, " < 0"));
  }
  DT_RETURN_IF_ERROR(CheckOptions(*this, "AllocateHostBuffer", options));
  const size_t rounded = (static_cast<size_t>(bytes) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, std::max<size_t>(rounded, 64));
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(OpDescription(*this, "AllocateHostBuffer"),
                                                     ": out of memory for ", bytes, " bytes"));
  }
  std::memset(p, 0, rounded);
  return std::unique_ptr<HostBuffer>(new PlainHostBuffer(p, bytes));
}

std::string OpDescription(const Communicator& c, absl::string_view op) {
  return absl::StrCat(op, " on group '", c.name(), "' (rank ", c.rank(), " of ", c.size(), ")");
}

absl::Status CheckBuffer(const Communicator& c, absl::string_view op, const CommBuffer& b) {
  if (b.count < 0) return Invalid(c, op, absl::StrCat("negative element count ", b.count));
  if (b.count > 0 && b.data == nullptr) {
    return Invalid(c, op, absl::StrCat("null data pointer for ", b.count, " elements"));
  }
  return absl::OkStatus();
}

absl::Status CheckReduceBuffer(const Communicator& c, absl::string_view op, const CommBuffer& b) {
  if (b.dtype != DType::kF32 && b.dtype != DType::kBF16 && b.dtype != DType::kF16) {
    return Invalid(
        c, op, absl::StrCat("dtype ", DTypeName(b.dtype), " cannot be reduced (f32, bf16, f16)"));
  }
  return CheckBuffer(c, op, b);
}

absl::Status CheckPeer(const Communicator& c, absl::string_view op, int peer,
                       absl::string_view what, bool allow_self) {
  if (peer < 0 || peer >= c.size()) {
    return Invalid(c, op, absl::StrCat(what, " ", peer, " is not a rank of the group"));
  }
  if (!allow_self && peer == c.rank()) {
    return Invalid(c, op, absl::StrCat(what, " ", peer, " is this rank"));
  }
  return absl::OkStatus();
}

absl::Status CheckChunked(const Communicator& c, absl::string_view op, const CommBuffer& whole,
                          const CommBuffer& chunk) {
  if (whole.dtype != chunk.dtype) {
    return Invalid(
        c, op,
        absl::StrCat("dtypes differ: ", DTypeName(whole.dtype), " and ", DTypeName(chunk.dtype)));
  }
  if (whole.count != static_cast<int64_t>(c.size()) * chunk.count) {
    return Invalid(c, op,
                   absl::StrCat("expected ", c.size(), " x ", chunk.count, " = ",
                                static_cast<int64_t>(c.size()) * chunk.count,
                                " elements in the gathered/scattered buffer, got ", whole.count));
  }
  return absl::OkStatus();
}

absl::Status CheckDevice(const Communicator& c, absl::string_view op, const CommBuffer& b,
                         DeviceType type) {
  if (b.device.type != type) {
    return Invalid(c, op,
                   absl::StrCat("backend '", c.backend(), "' needs ",
                                type == DeviceType::kCpu ? "CPU" : "CUDA", " buffers"));
  }
  return absl::OkStatus();
}

absl::Status CheckOptions(const Communicator& c, absl::string_view op, const CommOptions& options) {
  if (options.timeout <= absl::ZeroDuration()) {
    return Invalid(
        c, op,
        absl::StrCat("timeout must be positive, got ", absl::FormatDuration(options.timeout)));
  }
  return absl::OkStatus();
}

absl::Status CheckSplitRanks(const Communicator& c, const std::vector<int>& ranks,
                             absl::string_view name) {
  const std::string op = absl::StrCat("Split('", name, "')");
  if (name.empty()) return Invalid(c, op, "empty group name");
  if (ranks.empty()) return Invalid(c, op, "empty rank list");
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] < 0 || ranks[i] >= c.size() || (i > 0 && ranks[i] <= ranks[i - 1])) {
      return Invalid(c, op,
                     absl::StrCat("ranks must be ascending, distinct ranks of the group, got [",
                                  absl::StrJoin(ranks, ", "), "]"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckAllReduceArgs(const Communicator& c, const CommBuffer& buffer,
                                const CommOptions& options, DeviceType device) {
  constexpr absl::string_view kOp = "AllReduce";
  DT_RETURN_IF_ERROR(CheckReduceBuffer(c, kOp, buffer));
  DT_RETURN_IF_ERROR(CheckDevice(c, kOp, buffer, device));
  return CheckOptions(c, kOp, options);
}

absl::Status CheckReduceScatterArgs(const Communicator& c, const CommBuffer& input,
                                    const CommBuffer& output, const CommOptions& options,
                                    DeviceType device) {
  constexpr absl::string_view kOp = "ReduceScatter";
  DT_RETURN_IF_ERROR(CheckReduceBuffer(c, kOp, input));
  DT_RETURN_IF_ERROR(CheckReduceBuffer(c, kOp, output));
  DT_RETURN_IF_ERROR(CheckChunked(c, kOp, input, output));
  DT_RETURN_IF_ERROR(CheckDevice(c, kOp, input, device));
  DT_RETURN_IF_ERROR(CheckDevice(c, kOp, output, device));
  return CheckOptions(c, kOp, options);
}

absl::Status CheckAllGatherArgs(const Communicator& c, const CommBuffer& input,
                                const CommBuffer& output, const CommOptions& options,
                                DeviceType device) {
  constexpr absl::string_view kOp = "AllGather";
  DT_RETURN_IF_ERROR(CheckBuffer(c, kOp, input));
  DT_RETURN_IF_ERROR(CheckBuffer(c, kOp, output));
  DT_RETURN_IF_ERROR(CheckChunked(c, kOp, output, input));
  DT_RETURN_IF_ERROR(CheckDevice(c, kOp, input, device));
  DT_RETURN_IF_ERROR(CheckDevice(c, kOp, output, device));
  return CheckOptions(c, kOp, options);
}

absl::Status CheckBroadcastArgs(const Communicator& c, const CommBuffer& buffer, int root,
                                const CommOptions& options, DeviceType device) {
  constexpr absl::string_view kOp = "Broadcast";
  DT_RETURN_IF_ERROR(CheckBuffer(c, kOp, buffer));
  DT_RETURN_IF_ERROR(CheckPeer(c, kOp, root, "root", /*allow_self=*/true));
  DT_RETURN_IF_ERROR(CheckDevice(c, kOp, buffer, device));
  return CheckOptions(c, kOp, options);
}

absl::Status CheckPointToPointArgs(const Communicator& c, absl::string_view op,
                                   const CommBuffer& buffer, int peer, absl::string_view peer_name,
                                   const CommOptions& options, DeviceType device) {
  DT_RETURN_IF_ERROR(CheckBuffer(c, op, buffer));
  DT_RETURN_IF_ERROR(CheckPeer(c, op, peer, peer_name, /*allow_self=*/false));
  DT_RETURN_IF_ERROR(CheckDevice(c, op, buffer, device));
  return CheckOptions(c, op, options);
}

}  // namespace dstrain::comm
