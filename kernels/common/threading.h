// Threading helpers shared by the CPU kernels.
//
// Kernels parallelise with OpenMP only (`#pragma omp parallel for`): it is the runtime oneDNN uses
// too (Debian's libdnnl links libgomp), so the GEMMs and these kernels share one pool of threads
// and never oversubscribe the cores. Kernels never create threads of their own.
//
// Determinism: a kernel that reduces across threads must not let the thread count or the timing
// choose the order of additions. The helpers below split work into pieces that depend only on the
// problem size, so a kernel can combine per-piece partial results in a fixed order.
#pragma once

#include <cstdint>

#include "absl/functional/function_ref.h"

namespace dstrain::kernels {

// Threads an OpenMP parallel region started here would get: omp_get_max_threads(), or 1 when built
// without OpenMP.
int KernelThreads();

// Regions smaller than this many elements of streaming work (a few microseconds) run on one thread:
// waking the pool costs more than it saves.
inline constexpr int64_t kMinParallelElements = int64_t{1} << 15;

// [begin, end) of piece `part` when [0, n) is cut into `parts` contiguous pieces whose boundaries
// are multiples of `align` (except the last end, n). Pieces differ in size by at most `align`;
// some may be empty when n is small.
struct Range {
  int64_t begin;
  int64_t end;
};
Range SplitRange(int64_t n, int64_t parts, int64_t part, int64_t align = 1);

// How many threads to use for streaming work over n elements: 1 below kMinParallelElements, then up
// to KernelThreads().
int ThreadsFor(int64_t n);

// Calls fn(begin, end) for each of `parts` pieces SplitRange(n, parts, i, align), the pieces in
// parallel on `parts` OpenMP threads (inline when parts <= 1). Empty pieces are skipped.
void ParallelFor(int64_t n, int parts, int64_t align, absl::FunctionRef<void(int64_t, int64_t)> fn);

// A per-thread, grow-only, 64-byte-aligned float buffer for kernels that need workspace the caller
// does not provide. The pointer stays valid until the same thread calls again with a larger size.
// OpenMP worker threads live for the process, so after the first call this allocates nothing.
float* ThreadScratch(int64_t floats);

}  // namespace dstrain::kernels
