#include <cstdint>

#include "kernels/common/simd.h"
#include "kernels/common/threading.h"
#include "kernels/encoder/encoder.h"

namespace dstrain::kernels {
namespace {

#define DT_ISA_BODY "kernels/encoder/encoder_body.inc"
#include "kernels/common/foreach_isa.inc"

}  // namespace

void EncoderForward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                    int T, int C) {
  const auto fn = DT_ISA_SELECT(ForwardRows);
  const int64_t rows = static_cast<int64_t>(B) * T;
  ParallelFor(rows, ThreadsFor(rows * C), 1,
              [&](int64_t begin, int64_t end) { fn(out, tokens, wte, wpe, begin, end, T, C); });
}

void EncoderBackward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                     int T, int C) {
  const auto fn = DT_ISA_SELECT(BackwardColumns);
  // Column slices are whole cache lines (16 floats), so threads never share a line.
  const int64_t max_parts = (C + 15) / 16;
  int parts = ThreadsFor(static_cast<int64_t>(B) * T * C);
  if (parts > max_parts) parts = static_cast<int>(max_parts);
  ParallelFor(C, parts, 16, [&](int64_t c0, int64_t c1) {
    fn(dwte, dwpe, dout, tokens, B, T, C, static_cast<int>(c0), static_cast<int>(c1));
  });
}

}  // namespace dstrain::kernels
