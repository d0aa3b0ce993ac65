#include "worker/device/cuda/host_staged_communicator.h"

#include <cuda_runtime.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/comm/completion_work.h"

namespace dstrain::device {
namespace {

cudaStream_t StreamOf(const comm::CommBuffer& b) { return static_cast<cudaStream_t>(b.stream); }

absl::Status Cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();
  return absl::InternalError(
      absl::StrCat("host-staged collective: ", what, ": ", cudaGetErrorName(e)));
}

}  // namespace

HostStagedCommunicator::HostStagedCommunicator(std::unique_ptr<comm::Communicator> inner)
    : owned_(std::move(inner)),
      inner_(owned_.get()),
      backend_(absl::StrCat("host-staged ", inner_->backend())) {}

HostStagedCommunicator::HostStagedCommunicator(comm::Communicator* inner)
    : inner_(inner), backend_(absl::StrCat("host-staged ", inner_->backend())) {}

absl::StatusOr<HostStagedCommunicator::Staged> HostStagedCommunicator::ToHost(
    const comm::CommBuffer& device) {
  Staged s;
  const size_t bytes = static_cast<size_t>(device.count) * DTypeSize(device.dtype);
  s.bytes.resize(bytes);
  s.host = comm::CommBuffer{s.bytes.data(), device.count, device.dtype, Device::Cpu(), nullptr};
  if (bytes > 0) {
    DT_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(s.bytes.data(), device.data, bytes,
                                            cudaMemcpyDeviceToHost, StreamOf(device)),
                            "device to host"));
    DT_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(StreamOf(device)), "device to host"));
  }
  return s;
}

absl::Status HostStagedCommunicator::ToDevice(const Staged& staged,
                                              const comm::CommBuffer& device) {
  if (staged.bytes.empty()) return absl::OkStatus();
  DT_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(device.data, staged.bytes.data(), staged.bytes.size(),
                                          cudaMemcpyHostToDevice, StreamOf(device)),
                          "host to device"));
  return Cuda(cudaStreamSynchronize(StreamOf(device)), "host to device");
}

absl::StatusOr<std::unique_ptr<comm::Work>> HostStagedCommunicator::AllReduce(
    comm::CommBuffer buffer, comm::ReduceOp op, const comm::CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckAllReduceArgs(*this, buffer, options, DeviceType::kCuda));
  DT_ASSIGN_OR_RETURN(Staged s, ToHost(buffer));
  DT_ASSIGN_OR_RETURN(auto work, inner_->AllReduce(s.host, op, options));
  absl::Status status = work->Wait();
  if (status.ok()) status = ToDevice(s, buffer);
  return comm::CompletedWork(std::move(status));
}

absl::StatusOr<std::unique_ptr<comm::Work>> HostStagedCommunicator::ReduceScatter(
    comm::CommBuffer input, comm::CommBuffer output, comm::ReduceOp op,
    const comm::CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckReduceScatterArgs(*this, input, output, options, DeviceType::kCuda));
  DT_ASSIGN_OR_RETURN(Staged in, ToHost(input));
  Staged out;
  out.bytes.resize(static_cast<size_t>(output.count) * DTypeSize(output.dtype));
  out.host = comm::CommBuffer{out.bytes.data(), output.count, output.dtype, Device::Cpu(), nullptr};
  DT_ASSIGN_OR_RETURN(auto work, inner_->ReduceScatter(in.host, out.host, op, options));
  absl::Status status = work->Wait();
  if (status.ok()) status = ToDevice(out, output);
  return comm::CompletedWork(std::move(status));
}

absl::StatusOr<std::unique_ptr<comm::Work>> HostStagedCommunicator::AllGather(
    comm::CommBuffer input, comm::CommBuffer output, const comm::CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckAllGatherArgs(*this, input, output, options, DeviceType::kCuda));
  DT_ASSIGN_OR_RETURN(Staged in, ToHost(input));
  Staged out;
  out.bytes.resize(static_cast<size_t>(output.count) * DTypeSize(output.dtype));
  out.host = comm::CommBuffer{out.bytes.data(), output.count, output.dtype, Device::Cpu(), nullptr};
  DT_ASSIGN_OR_RETURN(auto work, inner_->AllGather(in.host, out.host, options));
  absl::Status status = work->Wait();
  if (status.ok()) status = ToDevice(out, output);
  return comm::CompletedWork(std::move(status));
}

absl::StatusOr<std::unique_ptr<comm::Work>> HostStagedCommunicator::Broadcast(
    comm::CommBuffer buffer, int root, const comm::CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckBroadcastArgs(*this, buffer, root, options, DeviceType::kCuda));
  DT_ASSIGN_OR_RETURN(Staged s, ToHost(buffer));
  DT_ASSIGN_OR_RETURN(auto work, inner_->Broadcast(s.host, root, options));
  absl::Status status = work->Wait();
  if (status.ok()) status = ToDevice(s, buffer);
  return comm::CompletedWork(std::move(status));
}

absl::StatusOr<std::unique_ptr<comm::Work>> HostStagedCommunicator::Send(
    comm::CommBuffer buffer, int dst, int tag, const comm::CommOptions& options) {
  DT_RETURN_IF_ERROR(
      CheckPointToPointArgs(*this, "Send", buffer, dst, "dst", options, DeviceType::kCuda));
  DT_ASSIGN_OR_RETURN(Staged s, ToHost(buffer));
  DT_ASSIGN_OR_RETURN(auto work, inner_->Send(s.host, dst, tag, options));
  return comm::CompletedWork(work->Wait());
}

absl::StatusOr<std::unique_ptr<comm::Work>> HostStagedCommunicator::Recv(
    comm::CommBuffer buffer, int src, int tag, const comm::CommOptions& options) {
  DT_RETURN_IF_ERROR(
      CheckPointToPointArgs(*this, "Recv", buffer, src, "src", options, DeviceType::kCuda));
  Staged s;
  s.bytes.resize(static_cast<size_t>(buffer.count) * DTypeSize(buffer.dtype));
  s.host = comm::CommBuffer{s.bytes.data(), buffer.count, buffer.dtype, Device::Cpu(), nullptr};
  DT_ASSIGN_OR_RETURN(auto work, inner_->Recv(s.host, src, tag, options));
  absl::Status status = work->Wait();
  if (status.ok()) status = ToDevice(s, buffer);
  return comm::CompletedWork(std::move(status));
}

absl::StatusOr<std::unique_ptr<comm::Work>> HostStagedCommunicator::Barrier(
    const comm::CommOptions& options) {
  return inner_->Barrier(options);
}

absl::StatusOr<std::unique_ptr<comm::Communicator>> HostStagedCommunicator::Split(
    const std::vector<int>& ranks, absl::string_view name, const comm::CommOptions& options) {
  DT_ASSIGN_OR_RETURN(std::unique_ptr<comm::Communicator> inner,
                      inner_->Split(ranks, name, options));
  if (inner == nullptr) return std::unique_ptr<comm::Communicator>();
  return std::unique_ptr<comm::Communicator>(
      std::make_unique<HostStagedCommunicator>(std::move(inner)));
}

}  // namespace dstrain::device
