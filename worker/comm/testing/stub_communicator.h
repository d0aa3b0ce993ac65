// A Communicator that is only a group identity (rank, size, name) for tests of the shared
// argument checks (communicator.h's Check*Args); every operation returns kUnimplemented, since
// those tests never reach one.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"

namespace dstrain::comm::testing {

class StubCommunicator final : public Communicator {
 public:
  StubCommunicator(int rank, int size, std::string name = "dp")
      : rank_(rank), size_(size), name_(std::move(name)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  absl::string_view backend() const override { return "stub"; }
  absl::StatusOr<std::unique_ptr<Work>> AllReduce(CommBuffer, ReduceOp,
                                                  const CommOptions&) override {
    return Unimplemented();
  }
  absl::StatusOr<std::unique_ptr<Work>> ReduceScatter(CommBuffer, CommBuffer, ReduceOp,
                                                      const CommOptions&) override {
    return Unimplemented();
  }
  absl::StatusOr<std::unique_ptr<Work>> AllGather(CommBuffer, CommBuffer,
                                                  const CommOptions&) override {
    return Unimplemented();
  }
  absl::StatusOr<std::unique_ptr<Work>> Broadcast(CommBuffer, int, const CommOptions&) override {
    return Unimplemented();
  }
  absl::StatusOr<std::unique_ptr<Work>> Send(CommBuffer, int, int, const CommOptions&) override {
    return Unimplemented();
  }
  absl::StatusOr<std::unique_ptr<Work>> Recv(CommBuffer, int, int, const CommOptions&) override {
    return Unimplemented();
  }
  absl::StatusOr<std::unique_ptr<Work>> Barrier(const CommOptions&) override {
    return Unimplemented();
  }
  void Abort(absl::Status) override {}
  absl::Status AsyncError() override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(const std::vector<int>&, absl::string_view,
                                                      const CommOptions&) override {
    return absl::UnimplementedError("StubCommunicator has no operations");
  }

 private:
  static absl::Status Unimplemented() {
    return absl::UnimplementedError("StubCommunicator has no operations");
  }
  int rank_;
  int size_;
  std::string name_;
};

}  // namespace dstrain::comm::testing
