// Process-wide settings for the compute binaries (dstrain, the benchmarks), applied first thing
// in main(). Two of them exist because of how the libraries underneath behave:
//
// OpenMP waiting. libgomp reads its environment once, when the library loads, so main() is already
// too late to change it with setenv: InitProcess sets OMP_WAIT_POLICY=PASSIVE and re-executes the
// program once (the variable marks the second run, so it never loops). By default idle OpenMP
// threads spin for ~300k iterations at every barrier; where cores are shared (CI running tests
// side by side, a laptop, several ranks per host) a spinning thread burns the core that the
// thread it waits for needs. Measured on the 2-core dev machine under a load of 3.6, the tiny-GPT
// training step took 1.61 s spinning and 0.75 s passive. A step has a few hundred parallel
// regions, so passive waking (~10 µs each) costs a few milliseconds on a quiet machine. A user who
// sets OMP_WAIT_POLICY or GOMP_SPINCOUNT keeps their choice.
//
// malloc. oneDNN's GEMM allocates its packing buffers on every call. glibc serves large blocks
// with mmap and gives freed memory back to the kernel, so every GEMM page-faulted fresh zeroed
// pages (visible as clear_page_erms in perf). Keeping freed memory in the heap (high mmap and
// trim thresholds) removed that: the tiny-GPT step went from ~0.62 s to ~0.45 s.
#pragma once

namespace dstrain {

// Call first thing in main(). Returns only when the settings are in place (or when re-exec is
// impossible, in which case it continues with the environment as it is).
void InitProcess(char** argv);

}  // namespace dstrain
