#include <cstdint>
#include <vector>

#include "kernels/cast/half_simd.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"
#include "kernels/rmsnorm/rmsnorm.h"

namespace dstrain::kernels {
namespace {

#include "kernels/cast/half_simd_isa.inc"
#define DT_ISA_BODY "kernels/rmsnorm/rmsnorm_body.inc"
#include "kernels/common/foreach_isa.inc"

// Rows per dweight partial sum: fixed, so the reduction order never depends on threads.
constexpr int64_t kRowsPerChunk = 32;

template <typename Out>
void ForwardAll(Out* out, float* rstd, const float* inp, const float* weight, int64_t N, int C,
                float eps) {
  if (N <= 0 || C <= 0) return;
  const auto fn = DT_ISA_SELECT(ForwardRows<Out>);
  ParallelFor(N, ThreadsFor(N * C), 1,
              [&](int64_t begin, int64_t end) { fn(out, rstd, inp, weight, begin, end, C, eps); });
}

}  // namespace

void RmsNormForward(float* out, float* rstd, const float* inp, const float* weight, int64_t N,
                    int C, float eps) {
  ForwardAll(out, rstd, inp, weight, N, C, eps);
}

void RmsNormForward(uint16_t* out_bf16, float* rstd, const float* inp, const float* weight,
                    int64_t N, int C, float eps) {
  ForwardAll(out_bf16, rstd, inp, weight, N, C, eps);
}

void RmsNormBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                     const float* weight, const float* rstd, int64_t N, int C) {
  if (N <= 0 || C <= 0) return;
  const auto fn = DT_ISA_SELECT(BackwardRows);
  const int64_t chunks = (N + kRowsPerChunk - 1) / kRowsPerChunk;
  const int64_t stride = (static_cast<int64_t>(C) + 15) / 16 * 16;  // whole cache lines
  std::vector<float> partial(chunks * stride, 0.f);                 // per chunk: dweight partial
  int threads = ThreadsFor(N * C);
  if (threads > chunks) threads = static_cast<int>(chunks);
  ParallelFor(chunks, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t r0 = k * kRowsPerChunk;
      const int64_t r1 = r0 + kRowsPerChunk < N ? r0 + kRowsPerChunk : N;
      fn(dinp, partial.data() + k * stride, dout, inp, weight, rstd, r0, r1, C);
    }
  });
  // Fold the partials in chunk order (a few hundred KB at most: one thread).
  for (int c = 0; c < C; ++c) {
    float sum = 0.f;
    for (int64_t k = 0; k < chunks; ++k) sum += partial[k * stride + c];
    dweight[c] += sum;
  }
}

}  // namespace dstrain::kernels
