// FakeCommunicator: a Communicator whose ranks are threads (or just objects) of one process,
// sharing a FakeWorld. After c10d's FakeProcessGroup, but it moves real data, so multi-rank logic
// (ZeRO partitioning, pipeline send/recv, gradient averaging) runs in a unit test without sockets.
//
// NOTE [FakeCommunicator semantics]
//   - Every rank's communicator numbers its collectives 0, 1, 2, ...; collective #k of every rank
//     meets in one slot of the world. When all ranks have arrived, the data moves at once, with a
//     deterministic reduction order (rank 0 + rank 1 + ... in f32, rounded once), so every rank
//     gets bitwise the same result. A rank whose arguments differ (another op, count, dtype, root
//     or reduce op) makes the collective fail with kInvalidArgument on every rank.
//   - Send/Recv match by (src, dst, tag) in posting order; both counts must match in bytes.
//   - Calls never block: they return a Work at once; the data moves when the last rank arrives, or
//     lazily when a rank waits or polls. Work::Wait blocks until completion, the operation's
//     deadline (call time + CommOptions::timeout) or the wait's own timeout, whichever is first.
//   - A collective whose deadline passes on some rank fails on every rank that arrived, with
//     kDeadlineExceeded naming the operation, the group and the rank(s) that never arrived. A rank
//     arriving later at a failed collective gets kAborted. Every rank whose operation failed is
//     poisoned: later calls fail at once with kAborted and the first error (AsyncError()).
//   - Abort(reason) poisons the rank and fails its pending operations, and the peers' side of
//     them, with kAborted.
//   - Split registers the k-th split of the world by every rank; members get a communicator over a
//     child FakeWorld, non-members nullptr. Ranks that pass different arguments get
//     kInvalidArgument.
//
// Fault switches (c10d's error_on_collective, generalised): FakeWorld::InjectFault makes a rank's
// op_index-th operation (counting every call on that communicator from 0: collectives, Send,
// Recv, Barrier) fail with an error (the rank does not take part; its peers time out), stall
// (the rank arrives `stall` late) or hang (never arrives; the rank's own Work fails at its
// deadline).
//
// Only CPU buffers. Thread-safety: a FakeWorld and its communicators may be used from any threads;
// all state sits under one mutex of the world (the data moves under it too: a test fake, not a
// performance model).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"

namespace dstrain::comm {

class FakeCommunicator;

// What to do to one operation of one rank.
struct FakeFault {
  enum class Kind {
    kError,  // the operation fails at once with `error`; the rank does not arrive
    kStall,  // the rank arrives `stall` after the call
    kHang,   // the rank never arrives; its own Work fails at its deadline
  };
  Kind kind = Kind::kError;
  absl::Status error = absl::InternalError("injected fault");
  absl::Duration stall = absl::ZeroDuration();
};

class FakeWorld : public std::enable_shared_from_this<FakeWorld> {
 public:
  // REQUIRES: size >= 1.
  static std::shared_ptr<FakeWorld> Create(int size, std::string name = "world");

  int size() const { return size_; }
  const std::string& name() const { return name_; }

  // Arms `fault` for operation `op_index` (0-based, every call counts) of `rank`. Set before that
  // operation is issued.
  void InjectFault(int rank, int64_t op_index, FakeFault fault);
  void FailOp(int rank, int64_t op_index, absl::Status error);
  void StallOp(int rank, int64_t op_index, absl::Duration stall);
  void HangOp(int rank, int64_t op_index);

  // How many operations `rank` has issued so far (the next op_index).
  int64_t OpsIssued(int rank);

  // Internal machinery, public for FakeCommunicator and its Work.
  enum class OpKind { kAllReduce, kReduceScatter, kAllGather, kBroadcast, kBarrier, kSend, kRecv };
  struct Args {
    CommBuffer in;
    CommBuffer out;
    ReduceOp op = ReduceOp::kSum;
    int root = 0;
    int peer = -1;  // Send: dst; Recv: src
    int tag = 0;
  };
  struct Slot;

  ~FakeWorld();

 private:
  friend class FakeCommunicator;
  class WorkImpl;

  struct RankState {
    bool joined = false;
    int64_t next_op_index = 0;
    int64_t next_seq = 0;
    int64_t next_split = 0;
    absl::Status error;  // poisoned when not OK
    std::map<int64_t, FakeFault> faults;
  };
  struct SplitRecord {
    std::vector<int> ranks;
    std::string name;
    std::shared_ptr<FakeWorld> child;
  };

  FakeWorld(int size, std::string name);

  absl::Status Join(int rank);
  absl::StatusOr<std::unique_ptr<Work>> Post(int rank, OpKind kind, const Args& args,
                                             absl::Duration timeout);
  void Abort(int rank, absl::Status reason);
  absl::Status AsyncError(int rank);
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int rank, const std::vector<int>& ranks,
                                                      absl::string_view name);

  // For FakeWork: the status of entry `index` of `slot` once final.
  absl::Status WaitEntry(const std::shared_ptr<Slot>& slot, int index, absl::Duration timeout);
  bool PollEntry(const std::shared_ptr<Slot>& slot, int index);

  // Completes or fails `slot` if its time has come. Signals waiters on any change.
  void Progress(const std::shared_ptr<Slot>& slot, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailSlot(Slot& slot, absl::StatusCode code, absl::string_view why, int culprit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Poison(int rank, const absl::Status& error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(const std::shared_ptr<Slot>& slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string Describe(const Slot& slot, int index) const;

  const int size_;
  const std::string name_;

  absl::Mutex mu_;
  absl::CondVar cv_;  // signalled on every slot state change
  std::vector<RankState> ranks_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, std::shared_ptr<Slot>> collectives_ ABSL_GUARDED_BY(mu_);
  std::map<std::tuple<int, int, int>, std::deque<std::shared_ptr<Slot>>> p2p_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, SplitRecord> splits_ ABSL_GUARDED_BY(mu_);
};

class FakeCommunicator final : public Communicator {
 public:
  // The communicator of `rank` in `world`; one per rank (kAlreadyExists for a second one).
  static absl::StatusOr<std::unique_ptr<FakeCommunicator>> Create(std::shared_ptr<FakeWorld> world,
                                                                  int rank);
  // Aborts pending operations ("communicator destroyed"), so no data moves into freed buffers.
  ~FakeCommunicator() override;

  const std::shared_ptr<FakeWorld>& world() const { return world_; }

  int rank() const override { return rank_; }
  int size() const override { return world_->size(); }
  const std::string& name() const override { return world_->name(); }
  absl::string_view backend() const override { return "fake"; }

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

  absl::StatusOr<std::unique_ptr<Communicator>> Split(const std::vector<int>& ranks,
                                                      absl::string_view name,
                                                      const CommOptions& options) override;

 private:
  FakeCommunicator(std::shared_ptr<FakeWorld> world, int rank)
      : world_(std::move(world)), rank_(rank) {}

  const std::shared_ptr<FakeWorld> world_;
  const int rank_;
};

}  // namespace dstrain::comm
