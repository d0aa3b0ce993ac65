#include <cmath>
#include <cstdint>

#include "common/status/status_macros.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"
#include "kernels/crossentropy/crossentropy.h"

namespace dstrain::kernels {
namespace {

#define DT_ISA_BODY "kernels/crossentropy/crossentropy_body.inc"
#include "kernels/common/foreach_isa.inc"

}  // namespace

void CrossEntropyForwardBackward(float* losses, float* logits, const int32_t* targets, int64_t N,
                                 int V, int Vp, float dlogits_scale) {
  if (N <= 0) return;
  DT_CHECK(V > 0 && V <= Vp);
  for (int64_t i = 0; i < N; ++i) DT_CHECK(targets[i] >= 0 && targets[i] < V);
  const auto fn = DT_ISA_SELECT(Rows);
  // ~20 flops per logit (exp), so even a few rows are worth splitting.
  int threads = ThreadsFor(N * Vp * 4);
  if (threads > N) threads = static_cast<int>(N);
  ParallelFor(N, threads, 1, [&](int64_t begin, int64_t end) {
    fn(losses, logits, targets, begin, end, V, Vp, dlogits_scale);
  });
}

double MeanLoss(const float* losses, int64_t N) {
  if (N <= 0) return 0.0;
  double sum = 0;
  for (int64_t i = 0; i < N; ++i) sum += losses[i];
  return sum / static_cast<double>(N);
}

}  // namespace dstrain::kernels
