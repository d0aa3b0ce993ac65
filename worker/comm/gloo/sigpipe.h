// SIGPIPE handling for the threads that write to GlooCommunicator's sockets.
//
// Writing to a socket whose peer died raises SIGPIPE, which kills the process by default, and Gloo
// writes with writev(2). Rather than change the process-wide disposition (the application's to
// choose), every thread that may write runs with SIGPIPE blocked: the threads we start block it for
// good; Gloo's device thread inherits the mask of the thread that creates the device, so that
// happens under ScopedBlockSigpipe, as do Send/Recv posted from the caller's thread (Gloo may write
// to the socket right there).
#pragma once

#include <signal.h>

namespace dstrain::comm::gloo_internal {

// Blocks SIGPIPE in the calling thread until destroyed. A SIGPIPE raised meanwhile is swallowed, so
// restoring the mask cannot deliver it (one that was already pending, or a thread that had SIGPIPE
// blocked before, is left as it was).
class ScopedBlockSigpipe {
 public:
  ScopedBlockSigpipe();
  ~ScopedBlockSigpipe();
  ScopedBlockSigpipe(const ScopedBlockSigpipe&) = delete;
  ScopedBlockSigpipe& operator=(const ScopedBlockSigpipe&) = delete;

 private:
  sigset_t old_;
  bool was_pending_ = false;
};

// Blocks SIGPIPE in the calling thread for the rest of its life (for threads we start).
void BlockSigpipeInThisThread();

}  // namespace dstrain::comm::gloo_internal
