// The problem shape the attention kernels' tests iterate over, and the buffer sizes it implies.
#pragma once

#include <cstdint>

#include "kernels/attention/attention.h"

namespace dstrain::kernels::attention_testing {

struct Shape {
  int B, T, C, NH;
};

inline int64_t QkvSize(const Shape& s) { return int64_t{s.B} * s.T * 3 * s.C; }
inline int64_t OutSize(const Shape& s) { return int64_t{s.B} * s.T * s.C; }
inline int64_t AttSize(const Shape& s) { return int64_t{s.B} * s.NH * s.T * s.T; }
inline int64_t StatsSize(const Shape& s) { return AttentionStateFloats(s.B, s.T, s.NH); }

}  // namespace dstrain::kernels::attention_testing
