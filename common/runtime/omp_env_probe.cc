// Prints the OpenMP wait policy the process ends up with, after EnsureOmpEnvironment.
#include <cstdio>
#include <cstdlib>

#include "common/runtime/omp_env.h"

int main(int argc, char** argv) {
  dstrain::EnsureOmpEnvironment(argv);
  const char* p = std::getenv("OMP_WAIT_POLICY");
  std::printf("%s %d\n", p ? p : "unset", argc);
  return 0;
}
