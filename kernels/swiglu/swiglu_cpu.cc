#include <cstdint>

#include "kernels/cast/half_simd.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"
#include "kernels/swiglu/swiglu.h"

namespace dstrain::kernels {
namespace {

#include "kernels/cast/half_simd_isa.inc"
#define DT_ISA_BODY "kernels/swiglu/swiglu_body.inc"
#include "kernels/common/foreach_isa.inc"

// ~25 flops an element (one exp, one division), as GELU: it pays to split smaller arrays than pure
// streaming would.
int SwiGluThreads(int64_t N, int I) { return ThreadsFor(N * I * 4); }

template <typename Out>
void ForwardAll(Out* out, const float* inp, int64_t N, int I) {
  if (N <= 0 || I <= 0) return;
  const auto fn = DT_ISA_SELECT(ForwardRows<Out>);
  ParallelFor(N, SwiGluThreads(N, I), 1,
              [&](int64_t begin, int64_t end) { fn(out, inp, begin, end, I); });
}

}  // namespace

void SwiGluForward(float* out, const float* inp, int64_t N, int I) { ForwardAll(out, inp, N, I); }

void SwiGluForward(uint16_t* out_bf16, const float* inp, int64_t N, int I) {
  ForwardAll(out_bf16, inp, N, I);
}

void SwiGluBackward(float* dinp, const float* inp, const float* dout, int64_t N, int I) {
  if (N <= 0 || I <= 0) return;
  const auto fn = DT_ISA_SELECT(BackwardRows);
  ParallelFor(N, SwiGluThreads(N, I), 1,
              [&](int64_t begin, int64_t end) { fn(dinp, inp, dout, begin, end, I); });
}

}  // namespace dstrain::kernels
