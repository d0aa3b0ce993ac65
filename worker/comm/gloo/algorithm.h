// What GlooCommunicator's collective algorithms are given, and all they are given: a Runner that
// moves bytes between this rank and its peers for one collective, and the Workspace that collective
// may use for scratch. Each algorithm lives in its own file (allreduce_ring.h,
// reduce_scatter_ring.h, allgather_ring.h, broadcast.h, barrier.h) and reads as the algorithm
// alone; the runtime (gloo_runtime.h) supplies the Runner, runs one algorithm at a time on the
// communicator's worker thread, and turns what it returns into the operation's result.
//
// Contract of an algorithm:
//   - Every rank runs the same algorithm with matching arguments. Gloo pairs a send with a receive
//     by slot, in posting order, and every transfer of a collective uses the collective's slot, so
//     the sends one rank posts to a peer must match, in order, the receives that peer posts.
//   - Both sides skip empty transfers: the Runner posts nothing for zero bytes, so an algorithm may
//     post one only where the peer's matching call is empty too.
//   - It returns the Runner's first error as it is; the runtime adds the operation, the group and
//     which peers failed too.
//   - Memory handed to Send/Recv must stay alive after the algorithm returns: a transfer that
//   failed
//     may still land until the runtime, once the algorithm has returned, has poisoned the
//     communicator and closed its connections. So scratch comes from the Workspace (or is the
//     caller's buffer), never from the algorithm's stack.
#pragma once

#include <cstddef>
#include <vector>

#include "absl/status/status.h"

namespace dstrain::comm::gloo_internal {

// Scratch kept between collectives, owned by the runtime and used by one collective at a time.
// Grown as needed and never shrunk, so a steady training loop does not allocate.
struct Workspace {
  std::vector<float> a;  // f32 partial sums
  std::vector<float> b;
  char token_out = 1;  // the barrier's tokens
  char token_in = 0;
};

// The transfers of one collective. Not thread-safe: the algorithm's thread only.
class Runner {
 public:
  virtual ~Runner() = default;

  // This rank's place in the group, and the group's size.
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual Workspace& workspace() = 0;

  // Waits, in posting order, for every transfer posted so far, against the collective's deadline.
  // Errors: kDeadlineExceeded naming the peer waited for; kAborted when the connection to it
  // broke, a peer reported failing this collective first, or the communicator was aborted.
  virtual absl::Status WaitAll() = 0;

  // Post a transfer of `bytes` bytes to / from `peer` and return at once (zero bytes: nothing is
  // posted). Errors: those of WaitAll, and kInternal when Gloo cannot set the transfer up.
  virtual absl::Status Send(int peer, const void* data, size_t bytes) = 0;
  virtual absl::Status Recv(int peer, void* data, size_t bytes) = 0;
};

// a mod n in [0, n), for rank arithmetic around a ring.
inline int Mod(int a, int n) { return ((a % n) + n) % n; }

}  // namespace dstrain::comm::gloo_internal
