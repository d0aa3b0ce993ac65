// Prints the OpenMP wait policy the process ends up with, after InitProcess.
#include <cstdio>
#include <cstdlib>

#include "common/runtime/process_init.h"

int main(int argc, char** argv) {
  dstrain::InitProcess(argv);
  const char* p = std::getenv("OMP_WAIT_POLICY");
  std::printf("%s %d\n", p ? p : "unset", argc);
  return 0;
}
