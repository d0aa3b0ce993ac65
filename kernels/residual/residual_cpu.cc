#include <cstdint>
#include <vector>

#include "kernels/common/simd.h"
#include "kernels/common/threading.h"
#include "kernels/residual/residual.h"

namespace dstrain::kernels {
namespace {

#define DT_ISA_BODY "kernels/residual/residual_body.inc"
#include "kernels/common/foreach_isa.inc"

// SumSquares adds fixed blocks of this many elements, then the block sums in order.
constexpr int64_t kSumBlock = int64_t{1} << 14;

}  // namespace

void ResidualForward(float* out, const float* a, const float* b, int64_t n) {
  const auto fn = DT_ISA_SELECT(AddRange);
  ParallelFor(n, ThreadsFor(n), 64, [&](int64_t begin, int64_t end) {
    fn(out + begin, a + begin, b + begin, end - begin);
  });
}

void AddInPlace(float* y, const float* x, int64_t n) { ResidualForward(y, y, x, n); }

void Scale(float* x, int64_t n, float s) {
  const auto fn = DT_ISA_SELECT(ScaleRange);
  ParallelFor(n, ThreadsFor(n), 64,
              [&](int64_t begin, int64_t end) { fn(x + begin, end - begin, s); });
}

void Fill(float* x, int64_t n, float v) {
  const auto fn = DT_ISA_SELECT(FillRange);
  ParallelFor(n, ThreadsFor(n), 64,
              [&](int64_t begin, int64_t end) { fn(x + begin, end - begin, v); });
}

double SumSquares(const float* x, int64_t n) {
  const auto fn = DT_ISA_SELECT(SumSquaresRange);
  if (n <= kSumBlock) return n > 0 ? fn(x, n) : 0.0;
  const int64_t blocks = (n + kSumBlock - 1) / kSumBlock;
  std::vector<double> partial(blocks);
  // Threads take whole blocks; which thread sums a block does not change its value.
  ParallelFor(blocks, ThreadsFor(n), 1, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t first = blk * kSumBlock;
      const int64_t count = n - first < kSumBlock ? n - first : kSumBlock;
      partial[blk] = fn(x + first, count);
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace dstrain::kernels
