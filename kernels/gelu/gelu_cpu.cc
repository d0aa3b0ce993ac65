#include <cstdint>

#include "kernels/cast/half_simd.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"
#include "kernels/gelu/gelu.h"

namespace dstrain::kernels {
namespace {

#include "kernels/cast/half_simd_isa.inc"
#define DT_ISA_BODY "kernels/gelu/gelu_body.inc"
#include "kernels/common/foreach_isa.inc"

// GELU costs ~25 flops an element, so it pays to split smaller arrays than pure streaming would.
int GeluThreads(int64_t n) { return ThreadsFor(n * 4); }

template <typename Out>
void ForwardAll(Out* out, const float* inp, int64_t n) {
  const auto fn = DT_ISA_SELECT(ForwardRange<Out>);
  ParallelFor(n, GeluThreads(n), 64,
              [&](int64_t begin, int64_t end) { fn(out + begin, inp + begin, end - begin); });
}

}  // namespace

void GeluForward(float* out, const float* inp, int64_t n) { ForwardAll(out, inp, n); }

void GeluForward(uint16_t* out_bf16, const float* inp, int64_t n) { ForwardAll(out_bf16, inp, n); }

void GeluBackward(float* dinp, const float* inp, const float* dout, int64_t n) {
  const auto fn = DT_ISA_SELECT(BackwardRange);
  ParallelFor(n, GeluThreads(n), 64, [&](int64_t begin, int64_t end) {
    fn(dinp + begin, inp + begin, dout + begin, end - begin);
  });
}

}  // namespace dstrain::kernels
