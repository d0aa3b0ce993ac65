#include "common/runtime/omp_env.h"

#include <unistd.h>

#include <cstdlib>

namespace dstrain {

void EnsureOmpEnvironment(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) {
    return;
  }
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0) != 0) return;
  ::execv("/proc/self/exe", argv);
  // execv only returns on failure: keep going with the default (spinning) policy.
}

}  // namespace dstrain
