// Runtime::CollectiveRunner: the Runner (algorithm.h) the runtime lends to the algorithm of one
// collective, on the worker thread.
//
// Every transfer goes on the collective's slot and is registered with the runtime while it is in
// flight, so that poisoning, a broken connection or a peer's failure record can interrupt its wait.
// When a transfer fails, the runner names the most telling reason: the broken connection to the
// peer (and why that peer failed, if it recorded it), a peer's failure record, or the timeout.
// The transfers are unregistered, and their Gloo buffers freed, when the runner is destroyed; RunOp
// poisons the communicator on failure before that, so nothing lands in the memory afterwards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gloo/transport/unbound_buffer.h"
#include "worker/comm/gloo/algorithm.h"
#include "worker/comm/gloo/gloo_runtime.h"

namespace dstrain::comm::gloo_internal {

class Runtime::CollectiveRunner final : public Runner {
 public:
  // Collective #`seq`, whose waits end at `deadline` (its start + `timeout`, named in errors).
  CollectiveRunner(Runtime* runtime, int64_t seq, absl::Time deadline, absl::Duration timeout);
  ~CollectiveRunner() override;

  int rank() const override { return runtime_->rank_; }
  int size() const override { return runtime_->size_; }
  Workspace& workspace() override { return runtime_->workspace_; }

  absl::Status WaitAll() override;
  absl::Status Send(int peer, const void* data, size_t bytes) override {
    return Post(true, peer, const_cast<void*>(data), bytes);
  }
  absl::Status Recv(int peer, void* data, size_t bytes) override {
    return Post(false, peer, data, bytes);
  }

 private:
  struct Transfer {
    std::unique_ptr<gloo::transport::UnboundBuffer> buffer;
    int peer;
    bool send;
  };

  static bool Wait(Transfer& t, absl::Time deadline);
  absl::Status Post(bool send, int peer, void* data, size_t bytes);
  // The most telling reason for the failure of transfer `t`: the broken connection to its peer,
  // a peer's failure record, a timeout, or what Gloo said.
  absl::Status Failure(const Transfer& t, absl::string_view what);

  Runtime* const runtime_;
  const int64_t seq_;
  const uint64_t slot_;
  const absl::Time deadline_;
  const absl::Duration timeout_;
  std::vector<Transfer> transfers_;
  size_t waited_ = 0;
};

}  // namespace dstrain::comm::gloo_internal
