// GlooCommunicator: the CPU Communicator over Gloo's TCP transport (c10d's ProcessGroupGloo).
//
// Gloo supplies the transport: one TCP device per communicator (bound to GlooOptions::hostname,
// 127.0.0.1 by default), a full mesh of connections set up through our Store
// (gloo::rendezvous::Context::connectFullMesh behind an adapter), and unbound buffers for
// send/recv. The algorithms are ours, written over those unbound buffers, because we need what
// Gloo's built-in ones do not give: f32 accumulation of bf16/f16 with one rounding, which peer a
// rank was waiting for when something fails, and waits that Abort() can interrupt.
//   - AllReduce: ring reduce-scatter of f32 partial sums (bf16/f16 converted to an f32 scratch
//     first), the owner of each chunk finishes it (kAvg: one division, then one rounding to the
//     dtype), then a ring all-gather of the finished chunks in the buffer's dtype. Every element is
//     reduced by exactly one rank, so all ranks get the same bits.
//   - ReduceScatter: the same reduce-scatter; the input is left untouched.
//   - AllGather: ring. Broadcast: binomial tree from the root. Barrier: dissemination (log2 n
//     rounds of 1-byte tokens).
//   - Send/Recv: unbound buffers on a slot derived from the tag, posted at once from the calling
//     thread (so rings of Send/Recv cannot deadlock); a small pool of waiter threads completes
//     their Works.
// Each algorithm has a file of its own (allreduce_ring.h, reduce_scatter_ring.h, allgather_ring.h,
// broadcast.h, barrier.h) and sees only the Runner of algorithm.h; gloo_runtime.h runs them.
//
// Ordering and asynchrony: collectives run one at a time, in call order, on one background thread
// per communicator (every rank must issue them in the same order); Send/Recv bypass that queue.
// Each operation's timeout counts from the moment it starts running.
//
// Failures: a peer that died (connection reset/closed) or a wait that outlives the timeout fails
// the operation (kAborted for a lost peer, kDeadlineExceeded for a timeout) with a message naming
// the operation, the group, the rank waited for (or the peer that failed first, and why), and the
// ranks that did not report the same failure: the failing rank records its failure in the store
// and waits up to GlooOptions::failure_report_grace for the others' records; ranks whose record is
// missing are named as dead, hung or absent. The communicator is then poisoned (AsyncError();
// later calls fail with kAborted) and its connections are reset, so the peers fail promptly too.
// Gloo does not wake every wait on a broken connection (a transfer already under way sleeps until
// its timeout), so two helpers interrupt such waits: a thread per peer that notices the peer's
// connection breaking (a dead process is noticed in well under a second, whatever the timeout),
// and a watchdog that polls the store for failure records of the running collective
// (GlooOptions::failure_poll_interval). An interrupted transfer gets a short last look (its data
// may have arrived just before the connection closed, as when a peer finishes and leaves), then
// fails. Abort() poisons and resets without a record. Errors therefore arrive within timeout +
// failure_report_grace (+ one poll interval), and within about failure_report_grace of a peer's
// death.
//
// Threads per communicator: the worker, the watchdog, one per peer (mostly asleep), Gloo's device
// thread (shared with Split children), and one per Send/Recv in flight (pooled).
//
// SIGPIPE: writing to a socket whose peer died raises SIGPIPE, which kills the process by default,
// and Gloo writes with writev(2). Every thread that may write (Gloo's device thread, our own
// threads, and the caller's thread while it posts a Send) runs with SIGPIPE blocked; the
// process-wide disposition is left alone.
//
// Keys: everything goes under "gloo/<name>/" in the store given to Create (Split: under the
// parent's prefix + "/split/<k>/<name>"). A store must not be reused for a second group of the
// same name (stale addresses would be read): scope it per job and attempt with a PrefixStore.
//
// Thread-safety: every method may be called from any thread. The store must outlive the
// communicator. Works may outlive it (pending ones then fail with kAborted).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/store/store.h"

namespace dstrain::comm {

namespace gloo_internal {
class Runtime;  // gloo_runtime.h
}  // namespace gloo_internal

struct GlooOptions {
  // Address of the local interface the TCP device binds to (a host name or IP address).
  std::string hostname = "127.0.0.1";
  // Bounds the rendezvous and connection setup of Create and Split (and is Gloo's context
  // timeout). Each operation has its own timeout in CommOptions.
  absl::Duration timeout = absl::Minutes(5);
  // After a collective fails, how long a rank waits for the peers' failure records before naming
  // the missing ones; capped at half the operation's timeout. Zero: the record is still written,
  // but nobody waits for the others'.
  absl::Duration failure_report_grace = absl::Milliseconds(500);
  // A collective running longer than this checks the store this often for a peer's failure
  // record, and gives up at once when there is one (one store round trip per poll). Zero
  // disables it: a rank then relies on Gloo noticing the broken connection, or on its timeout.
  absl::Duration failure_poll_interval = absl::Milliseconds(100);
};

class GlooCommunicator final : public Communicator {
 public:
  // Joins group `name` as `rank` of `size`: rendezvous through `store`, then a full mesh of TCP
  // connections. Blocks until every rank has joined or options.timeout passes. Errors:
  // kInvalidArgument for bad arguments; kDeadlineExceeded naming the ranks that never showed up;
  // kUnavailable when the store cannot be reached or the device cannot be created.
  // REQUIRES: `store` outlives the communicator.
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(store::Store* store, int rank,
                                                                  int size, absl::string_view name,
                                                                  const GlooOptions& options);
  // Pending operations fail with kAborted; then the threads are joined and the connections closed.
  ~GlooCommunicator() override;

  int rank() const override;
  int size() const override;
  const std::string& name() const override;
  absl::string_view backend() const override { return "gloo"; }

  absl::StatusOr<std::unique_ptr<Work>> AllReduce(CommBuffer buffer, ReduceOp op,
                                                  const CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> ReduceScatter(CommBuffer input, CommBuffer output,
                                                      ReduceOp op,
                                                      const CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> AllGather(CommBuffer input, CommBuffer output,
                                                  const CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> Broadcast(CommBuffer buffer, int root,
                                                  const CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> Send(CommBuffer buffer, int dst, int tag,
                                             const CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> Recv(CommBuffer buffer, int src, int tag,
                                             const CommOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> Barrier(const CommOptions& options) override;

  void Abort(absl::Status reason) override;
  absl::Status AsyncError() override;

  // Members rendezvous under this group's key prefix + "/split/<k>/<name>", k counting this
  // group's splits, and share this communicator's TCP device.
  absl::StatusOr<std::unique_ptr<Communicator>> Split(const std::vector<int>& ranks,
                                                      absl::string_view name,
                                                      const CommOptions& options) override;

 private:
  explicit GlooCommunicator(std::unique_ptr<gloo_internal::Runtime> runtime);

  std::unique_ptr<gloo_internal::Runtime> runtime_;
};

}  // namespace dstrain::comm
