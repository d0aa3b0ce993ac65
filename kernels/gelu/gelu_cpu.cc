#include <cstdint>

#include "kernels/common/simd.h"
#include "kernels/common/threading.h"
#include "kernels/gelu/gelu.h"

namespace dstrain::kernels {
namespace {

#define DT_ISA_BODY "kernels/gelu/gelu_body.inc"
#include "kernels/common/foreach_isa.inc"

// GELU costs ~25 flops an element, so it pays to split smaller arrays than pure streaming would.
int GeluThreads(int64_t n) { return ThreadsFor(n * 4); }

}  // namespace

void GeluForward(float* out, const float* inp, int64_t n) {
  const auto fn = DT_ISA_SELECT(ForwardRange);
  ParallelFor(n, GeluThreads(n), 64,
              [&](int64_t begin, int64_t end) { fn(out + begin, inp + begin, end - begin); });
}

void GeluBackward(float* dinp, const float* inp, const float* dout, int64_t n) {
  const auto fn = DT_ISA_SELECT(BackwardRange);
  ParallelFor(n, GeluThreads(n), 64, [&](int64_t begin, int64_t end) {
    fn(dinp + begin, inp + begin, dout + begin, end - begin);
  });
}

}  // namespace dstrain::kernels
