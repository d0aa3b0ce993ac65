#include <cstdint>

#include "kernels/common/simd.h"
#include "kernels/common/threading.h"
#include "kernels/swiglu/swiglu.h"

namespace dstrain::kernels {
namespace {

#define DT_ISA_BODY "kernels/swiglu/swiglu_body.inc"
#include "kernels/common/foreach_isa.inc"

// ~25 flops an element (one exp, one division), as GELU: it pays to split smaller arrays than pure
// streaming would.
int SwiGluThreads(int64_t N, int I) { return ThreadsFor(N * I * 4); }

}  // namespace

void SwiGluForward(float* out, const float* inp, int64_t N, int I) {
  if (N <= 0 || I <= 0) return;
  const auto fn = DT_ISA_SELECT(ForwardRows);
  ParallelFor(N, SwiGluThreads(N, I), 1,
              [&](int64_t begin, int64_t end) { fn(out, inp, begin, end, I); });
}

void SwiGluBackward(float* dinp, const float* inp, const float* dout, int64_t N, int I) {
  if (N <= 0 || I <= 0) return;
  const auto fn = DT_ISA_SELECT(BackwardRows);
  ParallelFor(N, SwiGluThreads(N, I), 1,
              [&](int64_t begin, int64_t end) { fn(dinp, inp, dout, begin, end, I); });
}

}  // namespace dstrain::kernels
