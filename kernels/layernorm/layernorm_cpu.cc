#include <cstdint>
#include <vector>

#include "kernels/cast/half_simd.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"
#include "kernels/layernorm/layernorm.h"

namespace dstrain::kernels {
namespace {

#include "kernels/cast/half_simd_isa.inc"
#define DT_ISA_BODY "kernels/layernorm/layernorm_body.inc"
#include "kernels/common/foreach_isa.inc"

// Rows per dweight/dbias partial sum: fixed, so the reduction order never depends on threads.
constexpr int64_t kRowsPerChunk = 32;

template <typename Out>
void ForwardAll(Out* out, float* mean, float* rstd, const float* inp, const float* weight,
                const float* bias, int64_t N, int C) {
  if (N <= 0 || C <= 0) return;
  const auto fn = DT_ISA_SELECT(ForwardRows<Out>);
  ParallelFor(N, ThreadsFor(N * C), 1, [&](int64_t begin, int64_t end) {
    fn(out, mean, rstd, inp, weight, bias, begin, end, C);
  });
}

}  // namespace

void LayerNormForward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                      const float* bias, int64_t N, int C) {
  ForwardAll(out, mean, rstd, inp, weight, bias, N, C);
}

void LayerNormForward(uint16_t* out_bf16, float* mean, float* rstd, const float* inp,
                      const float* weight, const float* bias, int64_t N, int C) {
  ForwardAll(out_bf16, mean, rstd, inp, weight, bias, N, C);
}

void LayerNormBackward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, const float* mean, const float* rstd,
                       int64_t N, int C) {
  if (N <= 0 || C <= 0) return;
  const auto fn = DT_ISA_SELECT(BackwardRows);
  const int64_t chunks = (N + kRowsPerChunk - 1) / kRowsPerChunk;
  const int64_t stride = (static_cast<int64_t>(C) + 15) / 16 * 16;  // whole cache lines
  // Per chunk: dweight partial, then dbias partial.
  std::vector<float> partial(chunks * 2 * stride, 0.f);
  int threads = ThreadsFor(N * C);
  if (threads > chunks) threads = static_cast<int>(chunks);
  ParallelFor(chunks, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t r0 = k * kRowsPerChunk;
      const int64_t r1 = r0 + kRowsPerChunk < N ? r0 + kRowsPerChunk : N;
      float* dw = partial.data() + k * 2 * stride;
      fn(dinp, dw, dw + stride, dout, inp, weight, mean, rstd, r0, r1, C);
    }
  });
  // Fold the partials in chunk order (a few hundred KB at most: one thread).
  for (int c = 0; c < C; ++c) {
    float sum_w = 0.f, sum_b = 0.f;
    for (int64_t k = 0; k < chunks; ++k) {
      sum_w += partial[k * 2 * stride + c];
      sum_b += partial[k * 2 * stride + stride + c];
    }
    dweight[c] += sum_w;
    dbias[c] += sum_b;
  }
}

}  // namespace dstrain::kernels
