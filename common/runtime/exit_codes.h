// How a trainer process ends, as the worker agent and the coordinator read it. The split follows
// Kubeflow's ExitCode policy: 1-127 are permanent (running the same job again fails the same
// way), 128-255 retryable (signals are 128 + n; the two codes below mean "not the job's fault").
#pragma once

namespace dstrain {

inline constexpr int kExitOk = 0;
// Training failed (a NaN loss, a damaged checkpoint, ...): permanent.
inline constexpr int kExitFailed = 1;
// Bad usage or an invalid job: permanent.
inline constexpr int kExitUsage = 2;
// A peer was lost or a collective timed out (a watchdog abort), or the rendezvous store could
// not be reached: retryable on healthy workers.
inline constexpr int kExitPeerLost = 200;
// Drained: asked to leave (its worker is going away), the trainer saved a checkpoint at a step
// boundary and exited; retryable elsewhere without losing steps.
inline constexpr int kExitDrained = 201;

}  // namespace dstrain
