// Runtime: all of a GlooCommunicator but its argument checks and its collective algorithms: the
// connections, the queue that runs collectives one at a time on a worker thread, Send/Recv, the
// detection and reporting of failures (peer watches, watchdog, failure records), poisoning and
// Abort, and Split. gloo_communicator.h states the behaviour; this header says how it is built.
//
// The pieces: the algorithms (allreduce_ring.h, ...) see the runtime only through the Runner of
// algorithm.h, which CollectiveRunner (collective_runner.h) implements over this class; failure
// records live in the store (failure_records.h); WaiterPool (waiter_pool.h) completes Send/Recv;
// sigpipe.h keeps SIGPIPE from killing the process. GlooCommunicator checks the arguments and
// picks the algorithm a collective runs.
//
// Locking: one mutex guards the queue, the poisoning error and the registry of transfers in flight,
// so that poisoning, a broken connection or a peer's failure record interrupts every wait that
// could be stuck, whichever thread notices first. Store round trips and waits on Gloo happen
// without it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gloo/rendezvous/context.h"
#include "gloo/transport/device.h"
#include "gloo/transport/unbound_buffer.h"
#include "worker/comm/communicator.h"
#include "worker/comm/completion_work.h"
#include "worker/comm/gloo/algorithm.h"
#include "worker/comm/gloo/failure_records.h"
#include "worker/comm/gloo/gloo_communicator.h"
#include "worker/comm/gloo/waiter_pool.h"
#include "worker/store/prefix_store.h"
#include "worker/store/store.h"

namespace dstrain::comm::gloo_internal {

// Slots name a transfer within a pair (Gloo matches sends and receives by slot, in posting order).
// Collective #seq uses one slot for all its steps; Send/Recv use one per tag.
inline constexpr uint64_t kCollectiveSlots = uint64_t{1} << 56;
inline constexpr uint64_t kP2PSlots = uint64_t{2} << 56;
// A receive that never completes, posted once per peer: Gloo signals it when the connection breaks.
inline constexpr uint64_t kWatchSlot = uint64_t{3} << 56;

inline uint64_t CollectiveSlot(int64_t seq) {
  return kCollectiveSlots | (static_cast<uint64_t>(seq) & (kCollectiveSlots - 1));
}
inline uint64_t P2PSlot(int tag) { return kP2PSlots | static_cast<uint32_t>(tag); }

// After an interruption (a peer's failure record, a broken connection), how long a wait may still
// take to complete: the data may have arrived just before.
inline constexpr absl::Duration kRecheck = absl::Milliseconds(200);

// A duration as Gloo's waits take it: whole milliseconds, at least 1 (a zero wait would time out at
// once) and at most a year (an "infinite" one would overflow).
std::chrono::milliseconds ToMillis(absl::Duration d);

// Thread-safe: every method may be called from any thread.
class Runtime {
 public:
  // Rendezvous under `prefix` in `base`, then connects the full mesh. `device` may be null (a new
  // one is created, bound to options.hostname). Errors as GlooCommunicator::Create's, naming the
  // group and the rank. REQUIRES: `base` outlives the runtime.
  static absl::StatusOr<std::unique_ptr<Runtime>> Connect(
      store::Store* base, std::string prefix, int rank, int size, std::string name,
      const GlooOptions& options, std::shared_ptr<gloo::transport::Device> device);

  // Pending operations fail with kAborted (the connections are then reset); otherwise the
  // connections close softly. Joins every thread.
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }

  // A collective: queued behind the others, run by the worker thread as body(runner) with
  // `timeout` counted from when it starts. A failure is completed into the Work as
  // "<op> on group '<name>' (rank r of n, op #seq): <body's error><what the peers reported>" and
  // poisons the communicator. Fails at once with kAborted once poisoned.
  using Body = std::function<absl::Status(Runner& run)>;
  absl::StatusOr<std::unique_ptr<Work>> Enqueue(absl::string_view op, absl::Duration timeout,
                                                Body body);

  // Send (`send`) or Recv of `buffer` to / from `peer` on the slot of `tag`, posted from the
  // calling thread before it returns; a waiter thread completes the Work. A failure poisons the
  // communicator.
  absl::StatusOr<std::unique_ptr<Work>> PostP2P(bool send, CommBuffer buffer, int peer, int tag,
                                                absl::Duration timeout);

  // Poisons the communicator with kAborted(reason) and resets the connections, without a
  // failure record.
  void Abort(const absl::Status& reason);
  // OK, or the error that poisoned the communicator.
  absl::Status AsyncError();

  // The runtime of the sub-group of `ranks` (checked by the caller), sharing this one's device;
  // null when this rank is not in `ranks`. Every rank of this group counts the split, member or
  // not, so the key prefix "<prefix>/split/<k>/<name>" is the same on all of them.
  absl::StatusOr<std::unique_ptr<Runtime>> Split(const std::vector<int>& ranks,
                                                 absl::string_view name,
                                                 const CommOptions& options);

 private:
  class CollectiveRunner;  // collective_runner.h

  struct Op {
    std::string name;
    int64_t seq = 0;
    absl::Duration timeout;
    Body body;
    std::shared_ptr<WorkState> work;
  };

  Runtime(store::Store* base, std::string prefix, int rank, int size, std::string name,
          const GlooOptions& options, std::shared_ptr<gloo::transport::Device> device,
          std::shared_ptr<gloo::rendezvous::Context> context);

  std::string Describe(absl::string_view op, int64_t seq = -1) const;
  void WorkerLoop();
  void RunOp(Op& op);
  // Polls the store for failure records of the running collective (NOTE [Failure records]).
  void WatchdogLoop();
  // Poisons the communicator with `error` unless already poisoned, interrupts every wait in
  // flight and hard-closes the connections (peers then fail at once). Returns the first error.
  absl::Status PoisonAndClose(const absl::Status& error);

  // REQUIRES: the buffer stays alive until Unregister. Fails once poisoned, or once collective
  // `seq` (-1 for Send/Recv) was interrupted.
  absl::Status Register(gloo::transport::UnboundBuffer* buffer, int64_t seq, int peer);
  void Unregister(gloo::transport::UnboundBuffer* buffer);
  // Whether a peer's failure record interrupted collective `seq`.
  bool Interrupted(int64_t seq);
  // Why the connection to `peer` broke ("" while it is fine).
  std::string BrokenConnection(int peer);

  // NOTE [Peer watch]: Gloo wakes a wait on a broken connection only when the transfer had not
  // started; a receive whose data was arriving, or a send being written, sleeps until its timeout.
  // So each peer gets a receive that never completes, and a thread waiting on it: when the
  // connection breaks, Gloo signals that receive, and the thread interrupts this rank's transfers
  // with that peer (which then fail at once unless their data had arrived).
  struct PeerWatch {
    std::unique_ptr<gloo::transport::UnboundBuffer> buffer;
    char byte = 0;
    std::thread thread;
  };
  void StartPeerWatches();
  void WatchPeer(PeerWatch& watch, int peer);
  void StopPeerWatches();

  const int rank_;
  const int size_;
  const std::string name_;
  const GlooOptions options_;
  store::Store* const base_;
  store::PrefixStore scope_;  // this group's keys
  FailureRecords records_;    // under scope_
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::rendezvous::Context> context_;

  absl::Mutex mu_;
  std::deque<Op> queue_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;      // the worker is inside an op
  int64_t current_seq_ ABSL_GUARDED_BY(mu_) = -1;  // the collective running, -1 if none
  absl::Time current_start_ ABSL_GUARDED_BY(mu_);
  int64_t interrupted_seq_ ABSL_GUARDED_BY(mu_) = -1;  // a peer reported failing this one
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);  // not OK once poisoned
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_split_ ABSL_GUARDED_BY(mu_) = 0;
  // Buffers with a transfer posted: the collective they belong to (-1: Send/Recv) and the peer.
  struct Inflight {
    int64_t seq;
    int peer;
  };
  absl::flat_hash_map<gloo::transport::UnboundBuffer*, Inflight> inflight_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> broken_ ABSL_GUARDED_BY(mu_);  // per peer, see BrokenConnection
  std::vector<std::unique_ptr<PeerWatch>> watches_;       // per peer (null for this rank)

  Workspace workspace_;  // the worker thread's, lent to each collective's algorithm

  WaiterPool waiters_;
  std::thread worker_;
  std::thread watchdog_;
};

}  // namespace dstrain::comm::gloo_internal
