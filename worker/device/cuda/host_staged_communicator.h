// HostStagedCommunicator: collectives on CUDA buffers through a communicator for host memory.
//
// Each operation copies its device buffers to host memory (on the buffer's stream, waited for),
// runs the inner communicator's operation there (Gloo between processes, Fake between threads),
// and copies the results back before its Work completes: every operation is synchronous. Slow
// next to NCCL, but it is what two ranks on ONE GPU can use (NCCL refuses two ranks on one
// device), and on the CUDA simulator, whose device memory is host memory, it lets the CUDA engine
// run with several ranks in CI.
//
// Contract: communicator.h's, with buffers on CUDA memory (kCuda; the argument checks are the
// shared ones). The inner communicator's errors and timeouts come through unchanged.
// Thread-safety: as the inner communicator's, one operation at a time per caller.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "worker/comm/communicator.h"

namespace dstrain::device {

class HostStagedCommunicator final : public comm::Communicator {
 public:
  // Owns `inner`.
  explicit HostStagedCommunicator(std::unique_ptr<comm::Communicator> inner);
  // Does not own `inner`, which must outlive this.
  explicit HostStagedCommunicator(comm::Communicator* inner);

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  absl::string_view backend() const override { return backend_; }

  absl::StatusOr<std::unique_ptr<comm::Work>> AllReduce(comm::CommBuffer buffer, comm::ReduceOp op,
                                                        const comm::CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<comm::Work>> ReduceScatter(
      comm::CommBuffer input, comm::CommBuffer output, comm::ReduceOp op,
      const comm::CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<comm::Work>> AllGather(comm::CommBuffer input,
                                                        comm::CommBuffer output,
                                                        const comm::CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<comm::Work>> Broadcast(comm::CommBuffer buffer, int root,
                                                        const comm::CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<comm::Work>> Send(comm::CommBuffer buffer, int dst, int tag,
                                                   const comm::CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<comm::Work>> Recv(comm::CommBuffer buffer, int src, int tag,
                                                   const comm::CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<comm::Work>> Barrier(const comm::CommOptions& options) override;
  void Abort(absl::Status reason) override { inner_->Abort(std::move(reason)); }
  absl::Status AsyncError() override { return inner_->AsyncError(); }
  absl::StatusOr<std::unique_ptr<comm::Communicator>> Split(
      const std::vector<int>& ranks, absl::string_view name,
      const comm::CommOptions& options) override;

 private:
  // A host copy of a device buffer.
  struct Staged {
    std::vector<char> bytes;
    comm::CommBuffer host;
  };
  absl::StatusOr<Staged> ToHost(const comm::CommBuffer& device);
  absl::Status ToDevice(const Staged& staged, const comm::CommBuffer& device);

  std::unique_ptr<comm::Communicator> owned_;
  comm::Communicator* inner_;
  std::string backend_;
};

}  // namespace dstrain::device
