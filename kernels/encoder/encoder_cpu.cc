#include <cstdint>

#include "kernels/cast/half_simd.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"
#include "kernels/encoder/encoder.h"

namespace dstrain::kernels {
namespace {

// The bf16 loads join simd.h's vocabulary in each ISA build of the body (as in cast_cpu.cc).
#include "kernels/cast/half_simd_isa.inc"

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

void EncoderForwardBf16(float* out, const int32_t* tokens, const uint16_t* wte16, const float* wpe,
                        int B, int T, int C) {
  const auto fn = DT_ISA_SELECT(ForwardRowsBf16);
  const int64_t rows = static_cast<int64_t>(B) * T;
  ParallelFor(rows, ThreadsFor(rows * C), 1,
              [&](int64_t begin, int64_t end) { fn(out, tokens, wte16, wpe, begin, end, T, C); });
}

void EncoderBackward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                     int T, int C) {
  const auto fn = DT_ISA_SELECT(BackwardPart);
  // Worker p owns the dwte rows of tokens v with v % parts == p and a contiguous block of dwpe
  // rows: no row is shared, so no additions race and none depends on timing.
  int parts = ThreadsFor(static_cast<int64_t>(B) * T * C);
  if (parts > T) parts = T > 0 ? T : 1;
  ParallelFor(parts, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const Range t = SplitRange(T, parts, p);
      fn(dwte, dwpe, dout, tokens, B, T, C, static_cast<int>(p), parts, static_cast<int>(t.begin),
         static_cast<int>(t.end));
    }
  });
}

}  // namespace dstrain::kernels
