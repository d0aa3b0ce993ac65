#include "common/runtime/process_init.h"

#include <malloc.h>
#include <unistd.h>

#include <cstdlib>

namespace dstrain {
namespace {

void EnsureOmpEnvironment(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) {
    return;
  }
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0) != 0) return;
  ::execv("/proc/self/exe", argv);
  // execv only returns on failure: keep going with the default (spinning) policy.
}

void KeepFreedMemoryInTheHeap() {
  constexpr int kOneGiB = 1 << 30;
  mallopt(M_MMAP_THRESHOLD, kOneGiB);  // blocks below 1 GiB come from the heap, not mmap
  mallopt(M_TRIM_THRESHOLD, kOneGiB);  // and freed heap memory is not returned below 1 GiB
}

}  // namespace

void InitProcess(char** argv) {
  EnsureOmpEnvironment(argv);
  KeepFreedMemoryInTheHeap();
}

}  // namespace dstrain
