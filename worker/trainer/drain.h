// Drain requests: the worker agent sends a trainer SIGUSR1 when its worker is going away; every
// rank then checkpoints at the next step boundary and leaves (docs/service.md, "Drain").
#pragma once

namespace dstrain::trainer {

// Blocks SIGUSR1 in the calling thread, so in every thread started after it (Gloo's, gRPC's,
// OpenMP's), and takes it on one thread waiting for it: a handler could run on any thread and
// interrupt a blocking call there (poll() and friends fail with EINTR even under SA_RESTART),
// failing a collective. Call before any other thread starts; later calls do nothing.
void StartDrainWatcher();

// Whether SIGUSR1 arrived since StartDrainWatcher.
bool DrainRequested();

}  // namespace dstrain::trainer
