// ShmCommunicator: the CPU Communicator for ranks on one host, over one POSIX shared-memory
// segment per group (segment.h) instead of TCP.
//
//   - Collectives run one at a time, in call order, on one worker thread per communicator, as a
//     sequence of steps over per-rank staging slots and sequence-number flags (steps.h); each
//     rank reduces its own share of every chunk from all ranks' slots (algorithms.h), with the
//     f32 accumulation and single rounding of cpu_reduce.h, so results match the other backends.
//   - Buffers from AllocateHostBuffer lie in memory every rank maps (windows.h): a collective
//     whose buffers lie there on every rank reads and writes the peers' buffers in place instead
//     of staging them (algorithms.h, the *Shared variants).
//   - Send/Recv go through one byte ring per ordered pair, moved by a progress thread (p2p.h);
//     they are not ordered with the collectives.
//   - Each operation's timeout counts from when it starts running. A wait that outlives it fails
//     with kDeadlineExceeded naming the operation, the group and the rank(s) waited for; a rank
//     waited for whose process is gone fails it at once with kAborted. The failing rank records
//     the failure in the segment, so its peers fail at once too, and the communicator is
//     poisoned (AsyncError(); later calls fail with kAborted). Abort() poisons and records too.
//   - Split: members create a new segment under "<prefix>/split/<k>/<name>".
//
// Keys: under "shm/<name>/" in the store given to Create. A store must not be reused for a second
// group of the same name: scope it per job and attempt with a PrefixStore.
//
// Thread-safety: every method may be called from any thread. The store must outlive the
// communicator. Works may outlive it (pending ones then fail with kAborted).
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/comm/completion_work.h"
#include "worker/store/store.h"

namespace dstrain::comm {

namespace shm_internal {
class Segment;
class Steps;
class PointToPoint;
class Windows;
}  // namespace shm_internal

struct ShmOptions {
  // Bounds the rendezvous of Create and Split.
  absl::Duration timeout = absl::Minutes(5);
  // Staging bytes per rank and pipeline stage, and per point-to-point ring (capped for large
  // groups so the segment stays within a few tens of MiB; segment.h).
  int64_t chunk_bytes = 4 << 20;
  int64_t ring_bytes = 1 << 20;
  // AllocateHostBuffer maps its memory into every rank (windows.h), so collectives on it skip
  // the staging copies; false: plain memory (for comparisons). The same on every rank.
  bool shared_buffers = true;
};

class ShmCommunicator final : public Communicator {
 public:
  // Joins group `name` as `rank` of `size` through `store`: rank 0 creates the segment, all map
  // it, all unlink it. Errors: kInvalidArgument; kDeadlineExceeded naming the ranks that never
  // joined; kResourceExhausted on every rank when the segment cannot be created (callers may fall
  // back to Gloo); kUnavailable for the store's errors.
  static absl::StatusOr<std::unique_ptr<ShmCommunicator>> Create(store::Store* store, int rank,
                                                                 int size, absl::string_view name,
                                                                 const ShmOptions& options);
  // Pending operations fail with kAborted; then the threads are joined and the segment unmapped.
  ~ShmCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  absl::string_view backend() const override { return "shm"; }

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
  // Memory every rank maps (windows.h): a shared-memory file of size() parts, this rank's part
  // returned. Collectives whose buffers lie in it on every rank skip the staging copies.
  absl::StatusOr<std::unique_ptr<HostBuffer>> AllocateHostBuffer(
      int64_t bytes, const CommOptions& options) override;
  bool SharesHostBuffers() const override { return options_.shared_buffers && size_ > 1; }

  // How many collectives so far ran on shared buffers without staging (windows.h).
  int64_t shared_collectives() const { return shared_collectives_.load(); }

  void Abort(absl::Status reason) override;
  absl::Status AsyncError() override;

  absl::StatusOr<std::unique_ptr<Communicator>> Split(const std::vector<int>& ranks,
                                                      absl::string_view name,
                                                      const CommOptions& options) override;

 private:
  using Body = std::function<absl::Status(shm_internal::Steps& steps)>;
  struct Op {
    std::string name;
    int64_t seq = 0;
    absl::Duration timeout;
    Body body;
    std::shared_ptr<WorkState> work;
  };

  ShmCommunicator(store::Store* store, std::string prefix, int rank, int size, std::string name,
                  const ShmOptions& options, std::unique_ptr<shm_internal::Segment> segment);
  static absl::StatusOr<std::unique_ptr<ShmCommunicator>> Join(store::Store* store,
                                                               std::string prefix, int rank,
                                                               int size, std::string name,
                                                               const ShmOptions& options);

  std::string Describe(absl::string_view op, int64_t seq = -1) const;
  absl::StatusOr<std::unique_ptr<Work>> Enqueue(absl::string_view op, absl::Duration timeout,
                                                Body body);
  void WorkerLoop();
  // Whether this rank has allocated a shared window yet: a collective called before the first
  // skips the step that looks for its buffers in one.
  bool AnyWindow();
  // Enqueues a collective that runs `shared` on every rank's address of `probe` where it lies in
  // a shared window on every rank (counted in shared_collectives()), else `staged`.
  using SharedBody =
      std::function<absl::Status(shm_internal::Steps& steps, const std::vector<char*>& at)>;
  absl::StatusOr<std::unique_ptr<Work>> EnqueueSharedOrStaged(absl::string_view op,
                                                              absl::Duration timeout,
                                                              const CommBuffer& probe,
                                                              SharedBody shared, Body staged);
  void RunOp(Op& op);
  // Poisons with `error` unless already poisoned, records it in the segment (the peers fail at
  // once) and fails pending Send/Recv. Returns the first error.
  absl::Status Poison(const absl::Status& error);

  store::Store* const store_;
  const std::string prefix_;
  const int rank_;
  const int size_;
  const std::string name_;
  const ShmOptions options_;
  std::unique_ptr<shm_internal::Segment> segment_;
  std::unique_ptr<shm_internal::Steps> steps_;  // the worker thread's
  std::atomic<bool> aborted_{false};            // read by every wait
  std::atomic<int64_t> shared_collectives_{0};

  absl::Mutex mu_;
  std::deque<Op> queue_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_split_ ABSL_GUARDED_BY(mu_) = 0;

  int64_t next_window_ ABSL_GUARDED_BY(mu_) = 0;
  // Shared with the buffers, which may outlive the communicator.
  std::shared_ptr<shm_internal::Windows> windows_;

  std::unique_ptr<shm_internal::PointToPoint> p2p_;
  std::thread worker_;
};

}  // namespace dstrain::comm
