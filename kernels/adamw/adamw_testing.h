// Test hook for adamw.h: forces AdamWUpdateMixed's choice between plain and streaming stores of
// the 16-bit copy (normally made from the parameter count and the last-level cache size), so that
// both loops are checked at sizes a unit test can afford. Not for production code.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// While alive, AdamWUpdateMixed streams param16 exactly when n >= min_params. Not thread-safe
// against concurrent updates; one at a time, not nested.
class ScopedMixedStreamThreshold {
 public:
  explicit ScopedMixedStreamThreshold(int64_t min_params);
  ~ScopedMixedStreamThreshold();
  ScopedMixedStreamThreshold(const ScopedMixedStreamThreshold&) = delete;
  ScopedMixedStreamThreshold& operator=(const ScopedMixedStreamThreshold&) = delete;
};

}  // namespace dstrain::kernels
