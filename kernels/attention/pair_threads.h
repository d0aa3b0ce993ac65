// How the attention kernels spread their (b, h) pairs over OpenMP threads: each pair is one
// thread's, start to end, which is what makes their results independent of the thread count.
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/common/threading.h"

namespace dstrain::kernels::attention_internal {

// Threads for B·NH independent pairs: at most one pair per thread; one thread for tiny problems
// (below ~100 µs of work waking the pool does not pay).
inline int PairThreads(int B, int T, int C, int NH) {
  const int64_t pairs = static_cast<int64_t>(B) * NH;
  const double flops = 2.0 * B * static_cast<double>(T) * T * C;
  if (flops < 4e6) return 1;
  const int threads = KernelThreads();
  return pairs < threads ? static_cast<int>(pairs) : threads;
}

// This thread's index in the parallel region, which picks its workspace.
inline int ThreadIndex() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

}  // namespace dstrain::kernels::attention_internal
