#include "common/status/status_macros.h"

#include <cstdio>
#include <cstdlib>

namespace dstrain::internal {

void CheckFailed(const char* file, int line, const char* cond) {
  std::fprintf(stderr, "%s:%d: check failed: %s\n", file, line, cond);
  std::fflush(stderr);
  std::abort();
}

}  // namespace dstrain::internal
