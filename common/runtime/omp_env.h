// Process-level OpenMP settings that must be in place before libgomp initialises.
//
// libgomp reads its environment once, when the library loads, so main() is already too late to
// change it with setenv. EnsureOmpEnvironment() therefore sets what dstrain needs and re-executes
// the program once (the environment variable marks the second run, so it never loops).
//
// Why passive waiting: by default idle OpenMP threads spin for ~300k iterations at every barrier.
// On a machine where the cores are shared (CI running tests side by side, a laptop, several
// ranks per host) a spinning thread burns the core that the thread it waits for needs; measured
// on the 2-core dev machine under a load of 3.6, the tiny-GPT training step took 1.61 s with
// spinning and 0.75 s with OMP_WAIT_POLICY=PASSIVE. A step has a few hundred parallel regions, so
// the cost of passive waking (~10 µs each) is a few milliseconds on a quiet machine.
// A user who sets OMP_WAIT_POLICY (or GOMP_SPINCOUNT) keeps their choice.
#pragma once

namespace dstrain {

// Call first thing in main(). Returns only when the environment is in place (or when re-exec is
// impossible, in which case it continues with the environment as it is).
void EnsureOmpEnvironment(char** argv);

}  // namespace dstrain
