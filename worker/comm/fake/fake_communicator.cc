#include "worker/comm/fake/fake_communicator.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/status/status_macros.h"
#include "worker/comm/completion_work.h"
#include "worker/comm/cpu_reduce.h"

namespace dstrain::comm {

struct FakeWorld::Slot {
  struct Entry {
    bool posted = false;
    OpKind kind = OpKind::kBarrier;
    Args args;
    absl::Time arrival = absl::InfiniteFuture();
    absl::Time deadline = absl::InfiniteFuture();
    absl::Duration timeout;
    bool final = false;  // `status` is the result
    absl::Status status;
  };
  enum class State { kPending, kDone, kFailed };

  bool collective = true;
  bool hang = false;  // a rank's private slot for an injected hang
  int64_t seq = -1;
  int tag = 0;
  std::vector<int> ranks;  // the world rank behind each entry
  std::vector<Entry> entries;
  State state = State::kPending;
  std::string failure;  // why it failed, for ranks that arrive afterwards
};

namespace {

bool IsCollective(FakeWorld::OpKind kind) {
  return kind != FakeWorld::OpKind::kSend && kind != FakeWorld::OpKind::kRecv;
}

absl::string_view KindName(FakeWorld::OpKind kind) {
  switch (kind) {
    case FakeWorld::OpKind::kAllReduce:
      return "AllReduce";
    case FakeWorld::OpKind::kReduceScatter:
      return "ReduceScatter";
    case FakeWorld::OpKind::kAllGather:
      return "AllGather";
    case FakeWorld::OpKind::kBroadcast:
      return "Broadcast";
    case FakeWorld::OpKind::kBarrier:
      return "Barrier";
    case FakeWorld::OpKind::kSend:
      return "Send";
    case FakeWorld::OpKind::kRecv:
      return "Recv";
  }
  return "?";
}

std::string Signature(FakeWorld::OpKind kind, const FakeWorld::Args& a) {
  std::string s = absl::StrCat(KindName(kind), "(", DTypeName(a.in.dtype), " x ", a.in.count);
  switch (kind) {
    case FakeWorld::OpKind::kAllReduce:
    case FakeWorld::OpKind::kReduceScatter:
      absl::StrAppend(&s, ", ", ReduceOpName(a.op));
      break;
    case FakeWorld::OpKind::kBroadcast:
      absl::StrAppend(&s, ", root ", a.root);
      break;
    default:
      break;
  }
  return absl::StrCat(s, ")");
}

bool SameCall(FakeWorld::OpKind ka, const FakeWorld::Args& a, FakeWorld::OpKind kb,
              const FakeWorld::Args& b) {
  if (ka != kb) return false;
  if (ka == FakeWorld::OpKind::kBarrier) return true;
  if (a.in.count != b.in.count || a.in.dtype != b.in.dtype) return false;
  if (ka == FakeWorld::OpKind::kAllReduce || ka == FakeWorld::OpKind::kReduceScatter) {
    return a.op == b.op;
  }
  if (ka == FakeWorld::OpKind::kBroadcast) return a.root == b.root;
  return true;
}

size_t Bytes(const CommBuffer& b) { return static_cast<size_t>(b.count) * DTypeSize(b.dtype); }

// Moves the data of a complete collective. REQUIRES: every entry posted with matching calls.
void RunCollective(FakeWorld::Slot& slot) {
  const int n = static_cast<int>(slot.entries.size());
  const FakeWorld::OpKind kind = slot.entries[0].kind;
  const FakeWorld::Args& a0 = slot.entries[0].args;
  const DType dtype = a0.in.dtype;
  const size_t esize = DTypeSize(dtype);
  switch (kind) {
    case FakeWorld::OpKind::kAllReduce: {
      if (a0.in.count == 0) return;
      std::vector<const void*> inputs(n);
      for (int r = 0; r < n; ++r) inputs[r] = slot.entries[r].args.in.data;
      std::vector<char> result(Bytes(a0.in));
      ReduceBuffers(inputs.data(), n, result.data(), a0.in.count, dtype, a0.op);
      for (int r = 0; r < n; ++r) {
        std::memcpy(slot.entries[r].args.in.data, result.data(), result.size());
      }
      return;
    }
    case FakeWorld::OpKind::kReduceScatter: {
      const int64_t chunk = a0.out.count;
      if (chunk == 0) return;
      std::vector<std::vector<char>> results(n, std::vector<char>(chunk * esize));
      std::vector<const void*> inputs(n);
      for (int r = 0; r < n; ++r) {
        for (int q = 0; q < n; ++q) {
          inputs[q] = static_cast<const char*>(slot.entries[q].args.in.data) + r * chunk * esize;
        }
        ReduceBuffers(inputs.data(), n, results[r].data(), chunk, dtype, a0.op);
      }
      for (int r = 0; r < n; ++r) {
        std::memcpy(slot.entries[r].args.out.data, results[r].data(), results[r].size());
      }
      return;
    }
    case FakeWorld::OpKind::kAllGather: {
      const size_t chunk_bytes = Bytes(a0.in);
      if (chunk_bytes == 0) return;
      std::vector<char> gathered(chunk_bytes * n);
      for (int q = 0; q < n; ++q) {
        std::memcpy(gathered.data() + q * chunk_bytes, slot.entries[q].args.in.data, chunk_bytes);
      }
      for (int r = 0; r < n; ++r) {
        std::memcpy(slot.entries[r].args.out.data, gathered.data(), gathered.size());
      }
      return;
    }
    case FakeWorld::OpKind::kBroadcast: {
      const size_t bytes = Bytes(a0.in);
      if (bytes == 0) return;
      const void* src = slot.entries[a0.root].args.in.data;
      for (int r = 0; r < n; ++r) {
        if (r != a0.root) std::memcpy(slot.entries[r].args.in.data, src, bytes);
      }
      return;
    }
    default:
      return;
  }
}

}  // namespace

// Holds the world alive, so a Work may outlive its communicator.
class FakeWorld::WorkImpl final : public Work {
 public:
  WorkImpl(std::shared_ptr<FakeWorld> world, std::shared_ptr<Slot> slot, int index)
      : world_(std::move(world)), slot_(std::move(slot)), index_(index) {}

  bool IsCompleted() override { return world_->PollEntry(slot_, index_); }
  absl::Status Wait(absl::Duration timeout) override {
    return world_->WaitEntry(slot_, index_, timeout);
  }

 private:
  const std::shared_ptr<FakeWorld> world_;
  const std::shared_ptr<Slot> slot_;
  const int index_;
};

std::shared_ptr<FakeWorld> FakeWorld::Create(int size, std::string name) {
  return std::shared_ptr<FakeWorld>(new FakeWorld(std::max(size, 1), std::move(name)));
}

FakeWorld::FakeWorld(int size, std::string name)
    : size_(size), name_(std::move(name)), ranks_(size) {}

FakeWorld::~FakeWorld() = default;

void FakeWorld::InjectFault(int rank, int64_t op_index, FakeFault fault) {
  absl::MutexLock lock(&mu_);
  if (rank < 0 || rank >= size_) return;
  ranks_[rank].faults[op_index] = std::move(fault);
}

void FakeWorld::FailOp(int rank, int64_t op_index, absl::Status error) {
  FakeFault f;
  f.kind = FakeFault::Kind::kError;
  f.error = std::move(error);
  InjectFault(rank, op_index, std::move(f));
}

void FakeWorld::StallOp(int rank, int64_t op_index, absl::Duration stall) {
  FakeFault f;
  f.kind = FakeFault::Kind::kStall;
  f.stall = stall;
  InjectFault(rank, op_index, std::move(f));
}

void FakeWorld::HangOp(int rank, int64_t op_index) {
  FakeFault f;
  f.kind = FakeFault::Kind::kHang;
  InjectFault(rank, op_index, std::move(f));
}

int64_t FakeWorld::OpsIssued(int rank) {
  absl::MutexLock lock(&mu_);
  if (rank < 0 || rank >= size_) return 0;
  return ranks_[rank].next_op_index;
}

absl::Status FakeWorld::Join(int rank) {
  absl::MutexLock lock(&mu_);
  if (rank < 0 || rank >= size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "FakeCommunicator: rank ", rank, " out of range for group '", name_, "' of ", size_));
  }
  if (ranks_[rank].joined) {
    return absl::AlreadyExistsError(
        absl::StrCat("FakeCommunicator: rank ", rank, " of group '", name_, "' already exists"));
  }
  ranks_[rank].joined = true;
  return absl::OkStatus();
}

std::string FakeWorld::Describe(const Slot& slot, int index) const {
  const Slot::Entry& e = slot.entries[index];
  std::string where = slot.collective ? absl::StrCat("op #", slot.seq)
                                      : absl::StrCat("tag ", e.args.tag, ", peer ", e.args.peer);
  return absl::StrCat(KindName(e.kind), " on group '", name_, "' (rank ", slot.ranks[index], " of ",
                      size_, ", ", where, ")");
}

void FakeWorld::Poison(int rank, const absl::Status& error) {
  if (ranks_[rank].error.ok()) ranks_[rank].error = error;
}

void FakeWorld::Forget(const std::shared_ptr<Slot>& slot) {
  for (const Slot::Entry& e : slot->entries) {
    if (!e.posted && !slot->hang) return;  // a late rank must still find the failure
  }
  if (slot->collective) {
    auto it = collectives_.find(slot->seq);
    if (it != collectives_.end() && it->second == slot) collectives_.erase(it);
    return;
  }
  auto it = p2p_.find({slot->ranks[0], slot->ranks[1], slot->tag});
  if (it == p2p_.end()) return;
  auto& queue = it->second;
  queue.erase(std::remove(queue.begin(), queue.end(), slot), queue.end());
  if (queue.empty()) p2p_.erase(it);
}

void FakeWorld::FailSlot(Slot& slot, absl::StatusCode code, absl::string_view why, int culprit) {
  slot.state = Slot::State::kFailed;
  slot.failure = culprit >= 0 ? absl::StrCat(Describe(slot, culprit), ": ", why) : std::string(why);
  for (size_t i = 0; i < slot.entries.size(); ++i) {
    Slot::Entry& e = slot.entries[i];
    if (!e.posted || e.final) continue;
    e.final = true;
    e.status = absl::Status(code, absl::StrCat(Describe(slot, i), ": ", why));
    Poison(slot.ranks[i], e.status);
  }
  cv_.SignalAll();
}

void FakeWorld::Progress(const std::shared_ptr<Slot>& slot, absl::Time now) {
  if (slot->state != Slot::State::kPending) return;
  bool all_here = true;
  for (const Slot::Entry& e : slot->entries) {
    if (!e.posted || e.arrival > now) all_here = false;
  }
  if (all_here && !slot->hang) {
    // Everyone arrived: check that the calls match, then move the data.
    const Slot::Entry& first = slot->entries[0];
    std::string mismatch;
    if (slot->collective) {
      for (size_t i = 1; i < slot->entries.size() && mismatch.empty(); ++i) {
        const Slot::Entry& e = slot->entries[i];
        if (!SameCall(first.kind, first.args, e.kind, e.args)) {
          mismatch =
              absl::StrCat("collective mismatch: rank 0 called ", Signature(first.kind, first.args),
                           ", rank ", i, " called ", Signature(e.kind, e.args));
        }
      }
    } else if (Bytes(first.args.in) != Bytes(slot->entries[1].args.in)) {
      mismatch = absl::StrCat("size mismatch: rank ", slot->ranks[0], " sends ",
                              Bytes(first.args.in), " bytes, rank ", slot->ranks[1], " receives ",
                              Bytes(slot->entries[1].args.in));
    }
    if (!mismatch.empty()) {
      FailSlot(*slot, absl::StatusCode::kInvalidArgument, mismatch, -1);
    } else {
      if (slot->collective) {
        RunCollective(*slot);
      } else if (Bytes(first.args.in) > 0) {
        std::memcpy(slot->entries[1].args.in.data, first.args.in.data, Bytes(first.args.in));
      }
      slot->state = Slot::State::kDone;
      for (Slot::Entry& e : slot->entries) {
        e.final = true;
        e.status = absl::OkStatus();
      }
      cv_.SignalAll();
    }
    Forget(slot);
    return;
  }
  // Not everyone is here: has the earliest deadline of those who are passed?
  int expired = -1;
  for (size_t i = 0; i < slot->entries.size(); ++i) {
    const Slot::Entry& e = slot->entries[i];
    if (!e.posted || e.deadline > now) continue;
    if (expired < 0 || e.deadline < slot->entries[expired].deadline) expired = i;
  }
  if (expired < 0) return;
  const Slot::Entry& late = slot->entries[expired];
  std::string why;
  if (slot->hang) {
    why = absl::StrCat("timed out after ", absl::FormatDuration(late.timeout),
                       ": this rank hangs (injected fault) and never took part");
  } else {
    std::vector<int> missing;
    for (size_t i = 0; i < slot->entries.size(); ++i) {
      const Slot::Entry& e = slot->entries[i];
      if (static_cast<int>(i) != expired && (!e.posted || e.arrival > now)) {
        missing.push_back(slot->ranks[i]);
      }
    }
    why = absl::StrCat("timed out after ", absl::FormatDuration(late.timeout),
                       " waiting for rank(s) [", absl::StrJoin(missing, ", "), "]");
    if (late.arrival > now) absl::StrAppend(&why, " (this rank was itself stalled)");
  }
  FailSlot(*slot, absl::StatusCode::kDeadlineExceeded, why, expired);
  Forget(slot);
}

absl::StatusOr<std::unique_ptr<Work>> FakeWorld::Post(int rank, OpKind kind, const Args& args,
                                                      absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  RankState& rs = ranks_[rank];
  if (!rs.error.ok()) {
    return absl::AbortedError(absl::StrCat(KindName(kind), " on group '", name_, "' (rank ", rank,
                                           " of ", size_,
                                           "): communicator is poisoned: ", rs.error.message()));
  }
  const int64_t op_index = rs.next_op_index++;
  const bool collective = IsCollective(kind);
  const int64_t seq = collective ? rs.next_seq++ : -1;
  FakeFault fault;
  bool has_fault = false;
  if (auto it = rs.faults.find(op_index); it != rs.faults.end()) {
    fault = std::move(it->second);
    rs.faults.erase(it);
    has_fault = true;
  }
  const absl::Time now = absl::Now();

  if (has_fault && fault.kind == FakeFault::Kind::kError) {
    absl::Status error(
        fault.error.code(),
        absl::StrCat(KindName(kind), " on group '", name_, "' (rank ", rank, " of ", size_,
                     ", op index ", op_index, "): injected fault: ", fault.error.message()));
    Poison(rank, error);
    return CompletedWork(std::move(error));
  }

  std::shared_ptr<Slot> slot;
  int index = 0;
  if (has_fault && fault.kind == FakeFault::Kind::kHang) {
    slot = std::make_shared<Slot>();
    slot->hang = true;
    slot->collective = collective;
    slot->seq = seq;
    slot->tag = args.tag;
    slot->ranks = {rank};
    slot->entries.resize(1);
  } else if (collective) {
    auto& s = collectives_[seq];
    if (s == nullptr) {
      s = std::make_shared<Slot>();
      s->seq = seq;
      s->entries.resize(size_);
      for (int r = 0; r < size_; ++r) s->ranks.push_back(r);
    }
    slot = s;
    index = rank;
  } else {
    const bool send = kind == OpKind::kSend;
    const int src = send ? rank : args.peer;
    const int dst = send ? args.peer : rank;
    index = send ? 0 : 1;
    auto& queue = p2p_[{src, dst, args.tag}];
    for (const auto& s : queue) {
      if (!s->entries[index].posted) {
        slot = s;
        break;
      }
    }
    if (slot == nullptr) {
      slot = std::make_shared<Slot>();
      slot->collective = false;
      slot->tag = args.tag;
      slot->ranks = {src, dst};
      slot->entries.resize(2);
      queue.push_back(slot);
    }
  }

  Slot::Entry& e = slot->entries[index];
  e.posted = true;
  e.kind = kind;
  e.args = args;
  e.timeout = timeout;
  e.deadline = now + timeout;
  e.arrival =
      slot->hang ? absl::InfiniteFuture() : now + (has_fault ? fault.stall : absl::ZeroDuration());
  if (slot->state == Slot::State::kFailed) {
    e.final = true;
    e.status = absl::AbortedError(
        absl::StrCat(Describe(*slot, index), ": abandoned by its peers: ", slot->failure));
    Poison(rank, e.status);
    Forget(slot);
  } else {
    Progress(slot, now);
  }
  cv_.SignalAll();

  return std::unique_ptr<Work>(new WorkImpl(shared_from_this(), slot, index));
}

bool FakeWorld::PollEntry(const std::shared_ptr<Slot>& slot, int index) {
  absl::MutexLock lock(&mu_);
  Progress(slot, absl::Now());
  return slot->entries[index].final;
}

absl::Status FakeWorld::WaitEntry(const std::shared_ptr<Slot>& slot, int index,
                                  absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const absl::Time wait_deadline = absl::Now() + timeout;
  for (;;) {
    const absl::Time now = absl::Now();
    Progress(slot, now);
    const Slot::Entry& e = slot->entries[index];
    if (e.final) return e.status;
    if (now >= wait_deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("Work::Wait: ", Describe(*slot, index), " not completed after ",
                       absl::FormatDuration(timeout), "; the operation is still running"));
    }
    // Wake for the next event: a deadline, the arrival of a stalled rank, or the wait's end.
    absl::Time next = wait_deadline;
    bool all_posted = true;
    absl::Time last_arrival = absl::InfinitePast();
    for (const Slot::Entry& other : slot->entries) {
      if (!other.posted) {
        all_posted = false;
        continue;
      }
      next = std::min(next, other.deadline);
      last_arrival = std::max(last_arrival, other.arrival);
    }
    if (all_posted) next = std::min(next, last_arrival);
    cv_.WaitWithDeadline(&mu_, next);
  }
}

void FakeWorld::Abort(int rank, absl::Status reason) {
  absl::MutexLock lock(&mu_);
  const std::string why = absl::StrCat("aborted: ", reason.message());
  Poison(rank, absl::AbortedError(
                   absl::StrCat("group '", name_, "' (rank ", rank, " of ", size_, "): ", why)));
  auto fail_pending = [&](const std::shared_ptr<Slot>& slot) {
    if (slot->state != Slot::State::kPending) return;
    for (size_t i = 0; i < slot->entries.size(); ++i) {
      const Slot::Entry& e = slot->entries[i];
      if (slot->ranks[i] != rank || !e.posted || e.final) continue;
      FailSlot(*slot, absl::StatusCode::kAborted, absl::StrCat("rank ", rank, " ", why),
               static_cast<int>(i));
      return;
    }
  };
  std::vector<std::shared_ptr<Slot>> slots;
  for (auto& [seq, slot] : collectives_) slots.push_back(slot);
  for (auto& [key, queue] : p2p_) slots.insert(slots.end(), queue.begin(), queue.end());
  for (const auto& slot : slots) fail_pending(slot);
}

absl::Status FakeWorld::AsyncError(int rank) {
  absl::MutexLock lock(&mu_);
  return ranks_[rank].error;
}

absl::StatusOr<std::unique_ptr<Communicator>> FakeWorld::Split(int rank,
                                                               const std::vector<int>& ranks,
                                                               absl::string_view name) {
  std::shared_ptr<FakeWorld> child;
  int child_rank = -1;
  {
    absl::MutexLock lock(&mu_);
    RankState& rs = ranks_[rank];
    if (!rs.error.ok()) {
      return absl::AbortedError(absl::StrCat("Split('", name, "') on group '", name_, "' (rank ",
                                             rank, " of ", size_,
                                             "): communicator is poisoned: ", rs.error.message()));
    }
    const int64_t k = rs.next_split++;
    SplitRecord& record = splits_[k];
    if (record.child == nullptr) {
      record.ranks = ranks;
      record.name = std::string(name);
      record.child =
          std::shared_ptr<FakeWorld>(new FakeWorld(static_cast<int>(ranks.size()), record.name));
    } else if (record.ranks != ranks || record.name != name) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Split('", name, "') on group '", name_, "' (rank ", rank, " of ", size_, "): split #", k,
          " was called with ranks [", absl::StrJoin(record.ranks, ", "), "] and name '",
          record.name, "' by another rank, here with [", absl::StrJoin(ranks, ", "), "]"));
    }
    auto it = std::find(ranks.begin(), ranks.end(), rank);
    if (it == ranks.end()) return std::unique_ptr<Communicator>();
    child = record.child;
    child_rank = static_cast<int>(it - ranks.begin());
  }
  DT_ASSIGN_OR_RETURN(std::unique_ptr<FakeCommunicator> comm,
                      FakeCommunicator::Create(std::move(child), child_rank));
  return std::unique_ptr<Communicator>(std::move(comm));
}

absl::StatusOr<std::unique_ptr<FakeCommunicator>> FakeCommunicator::Create(
    std::shared_ptr<FakeWorld> world, int rank) {
  if (world == nullptr) return absl::InvalidArgumentError("FakeCommunicator: null world");
  DT_RETURN_IF_ERROR(world->Join(rank));
  return std::unique_ptr<FakeCommunicator>(new FakeCommunicator(std::move(world), rank));
}

FakeCommunicator::~FakeCommunicator() {
  world_->Abort(rank_, absl::AbortedError("communicator destroyed"));
}

absl::StatusOr<std::unique_ptr<Work>> FakeCommunicator::AllReduce(CommBuffer buffer, ReduceOp op,
                                                                  const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckAllReduceArgs(*this, buffer, options, DeviceType::kCpu));
  FakeWorld::Args args;
  args.in = buffer;
  args.out = buffer;
  args.op = op;
  return world_->Post(rank_, FakeWorld::OpKind::kAllReduce, args, options.timeout);
}

absl::StatusOr<std::unique_ptr<Work>> FakeCommunicator::ReduceScatter(CommBuffer input,
                                                                      CommBuffer output,
                                                                      ReduceOp op,
                                                                      const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckReduceScatterArgs(*this, input, output, options, DeviceType::kCpu));
  FakeWorld::Args args;
  args.in = input;
  args.out = output;
  args.op = op;
  return world_->Post(rank_, FakeWorld::OpKind::kReduceScatter, args, options.timeout);
}

absl::StatusOr<std::unique_ptr<Work>> FakeCommunicator::AllGather(CommBuffer input,
                                                                  CommBuffer output,
                                                                  const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckAllGatherArgs(*this, input, output, options, DeviceType::kCpu));
  FakeWorld::Args args;
  args.in = input;
  args.out = output;
  return world_->Post(rank_, FakeWorld::OpKind::kAllGather, args, options.timeout);
}

absl::StatusOr<std::unique_ptr<Work>> FakeCommunicator::Broadcast(CommBuffer buffer, int root,
                                                                  const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckBroadcastArgs(*this, buffer, root, options, DeviceType::kCpu));
  FakeWorld::Args args;
  args.in = buffer;
  args.out = buffer;
  args.root = root;
  return world_->Post(rank_, FakeWorld::OpKind::kBroadcast, args, options.timeout);
}

absl::StatusOr<std::unique_ptr<Work>> FakeCommunicator::Send(CommBuffer buffer, int dst, int tag,
                                                             const CommOptions& options) {
  DT_RETURN_IF_ERROR(
      CheckPointToPointArgs(*this, "Send", buffer, dst, "dst", options, DeviceType::kCpu));
  FakeWorld::Args args;
  args.in = buffer;
  args.out = buffer;
  args.peer = dst;
  args.tag = tag;
  return world_->Post(rank_, FakeWorld::OpKind::kSend, args, options.timeout);
}

absl::StatusOr<std::unique_ptr<Work>> FakeCommunicator::Recv(CommBuffer buffer, int src, int tag,
                                                             const CommOptions& options) {
  DT_RETURN_IF_ERROR(
      CheckPointToPointArgs(*this, "Recv", buffer, src, "src", options, DeviceType::kCpu));
  FakeWorld::Args args;
  args.in = buffer;
  args.out = buffer;
  args.peer = src;
  args.tag = tag;
  return world_->Post(rank_, FakeWorld::OpKind::kRecv, args, options.timeout);
}

absl::StatusOr<std::unique_ptr<Work>> FakeCommunicator::Barrier(const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckOptions(*this, "Barrier", options));
  return world_->Post(rank_, FakeWorld::OpKind::kBarrier, FakeWorld::Args(), options.timeout);
}

void FakeCommunicator::Abort(absl::Status reason) { world_->Abort(rank_, std::move(reason)); }

absl::Status FakeCommunicator::AsyncError() { return world_->AsyncError(rank_); }

absl::StatusOr<std::unique_ptr<Communicator>> FakeCommunicator::Split(const std::vector<int>& ranks,
                                                                      absl::string_view name,
                                                                      const CommOptions& options) {
  DT_RETURN_IF_ERROR(CheckSplitRanks(*this, ranks, name));
  DT_RETURN_IF_ERROR(CheckOptions(*this, "Split", options));
  return world_->Split(rank_, ranks, name);
}

}  // namespace dstrain::comm
