// PointToPoint: Send and Recv of a ShmCommunicator, through one byte ring per ordered pair of
// ranks in the segment (segment.h). A message is a 16-byte header (tag, byte count) followed by
// its bytes; the sender advances `head` after writing, the receiver advances `tail` after reading
// (release / acquire), so the ring needs no lock and a message larger than the ring streams.
//
// Sends to one peer go into its ring in posting order. The receiver matches each arriving message
// with the first Recv posted for its (source, tag) and streams it straight into that buffer; a
// message nobody has posted a Recv for yet is copied aside (so a later message of another tag can
// get through: Sends and Recvs of different tags may be posted and waited in any order) and
// handed over when its Recv comes. A Send completes once its bytes are in the ring.
//
// One progress thread per communicator moves the bytes; it sleeps on a condition variable while
// nothing is pending, and otherwise polls with a growing pause. It fails an operation that
// outlives its timeout (kDeadlineExceeded naming the peer and the tag) or whose peer's process is
// gone (kAborted), and poisons the communicator through `poison`; poisoning fails every pending
// transfer (FailAll).
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/comm/completion_work.h"
#include "worker/comm/shm/segment.h"

namespace dstrain::comm::shm_internal {

class PointToPoint {
 public:
  // `poison(error)` poisons the communicator with `error` (unless it already is) and returns the
  // first error; it is called without this class's lock held, and is expected to call FailAll.
  using Poison = std::function<absl::Status(const absl::Status& error)>;
  PointToPoint(Segment* segment, int rank, Poison poison);
  // Fails what is pending with kAborted and joins the progress thread.
  ~PointToPoint();
  PointToPoint(const PointToPoint&) = delete;
  PointToPoint& operator=(const PointToPoint&) = delete;

  // Posts a Send (`send`) or Recv of `buffer` with `peer`; `what` names it in errors ("Send on
  // group 'g' (rank 0 of 2) to rank 1, tag 3").
  absl::StatusOr<std::unique_ptr<Work>> Post(bool send, const CommBuffer& buffer, int peer, int tag,
                                             absl::Duration timeout, std::string what);

  // Fails every pending transfer with kAborted("<what>: communicator is poisoned: <error>"), and
  // every later Post.
  void FailAll(const absl::Status& error);

 private:
  struct Transfer {
    bool send = false;
    char* data = nullptr;
    int64_t bytes = 0;
    int64_t tag = 0;
    int peer = 0;
    int64_t moved = 0;  // bytes written (Send) or received (Recv)
    bool header_written = false;
    absl::Time deadline;
    absl::Duration timeout;
    std::string what;
    std::shared_ptr<WorkState> work;
  };
  // A message that arrived before its Recv: its bytes so far, and the Recv once one claims it.
  struct Unexpected {
    int64_t tag = 0;
    int64_t bytes = 0;
    std::vector<char> data;
    int64_t received = 0;
    std::shared_ptr<Transfer> claimed;
  };
  // The message being read from a peer's ring (after its header).
  struct Incoming {
    bool active = false;
    int64_t tag = 0;
    int64_t bytes = 0;
    int64_t received = 0;
    std::shared_ptr<Transfer> recv;    // streamed straight into this Recv, or
    Unexpected* unexpected = nullptr;  // copied aside here
  };
  struct Peer {
    std::deque<std::shared_ptr<Transfer>> sends;  // in posting order; the front is being written
    std::deque<std::shared_ptr<Transfer>> recvs;  // posted, not yet matched with a message
    std::list<Unexpected> unexpected;             // in arrival order
    Incoming incoming;
  };

  void ProgressLoop();
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves what the rings allow; true if anything moved.
  bool PushSends(int peer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool PullMessages(int peer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Completes `recv` from a fully received unexpected message.
  void Deliver(Unexpected& u, const std::shared_ptr<Transfer>& recv)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The first pending transfer past its deadline or whose peer died: the error to fail it with,
  // and its Work in `failed`.
  absl::Status CheckPending(bool check_liveness, std::shared_ptr<WorkState>* failed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailAllLocked(const absl::Status& error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Segment* const segment_;
  const int rank_;
  const Poison poison_;

  absl::Mutex mu_;
  std::vector<Peer> peers_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread progress_;
};

}  // namespace dstrain::comm::shm_internal
