#include "kernels/common/threading.h"

#include <cstdlib>
#include <memory>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace dstrain::kernels {

int KernelThreads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

Range SplitRange(int64_t n, int64_t parts, int64_t part, int64_t align) {
  const int64_t units = (n + align - 1) / align;  // pieces are cut at multiples of `align`
  const int64_t base = units / parts;
  const int64_t extra = units % parts;
  const int64_t first = part * base + (part < extra ? part : extra);
  const int64_t count = base + (part < extra ? 1 : 0);
  Range r{first * align, (first + count) * align};
  if (r.begin > n) r.begin = n;
  if (r.end > n) r.end = n;
  return r;
}

int ThreadsFor(int64_t n) {
  if (n < kMinParallelElements) return 1;
  const int64_t by_size = n / (kMinParallelElements / 2);
  const int threads = KernelThreads();
  return by_size < threads ? static_cast<int>(by_size) : threads;
}

void ParallelFor(int64_t n, int parts, int64_t align,
                 absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (parts <= 1) {
    if (n > 0) fn(0, n);
    return;
  }
#pragma omp parallel for schedule(static, 1) num_threads(parts)
  for (int part = 0; part < parts; ++part) {
    const Range r = SplitRange(n, parts, part, align);
    if (r.begin < r.end) fn(r.begin, r.end);
  }
}

namespace {

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

}  // namespace

float* ThreadScratch(int64_t floats) {
  thread_local std::unique_ptr<float, FreeDeleter> buffer;
  thread_local int64_t capacity = 0;
  if (floats > capacity) {
    // Round up to whole cache lines: aligned_alloc wants a multiple of the alignment.
    const int64_t rounded = (floats + 15) / 16 * 16;
    buffer.reset(static_cast<float*>(std::aligned_alloc(64, rounded * sizeof(float))));
    if (buffer == nullptr) std::abort();
    capacity = rounded;
  }
  return buffer.get();
}

}  // namespace dstrain::kernels
