#include <cstdint>
#include <vector>

#include "kernels/cast/cast.h"
#include "kernels/cast/half_simd.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"

namespace dstrain::kernels {
namespace {

// The 16-bit loads and stores join simd.h's vocabulary in each ISA build of the body.
namespace isa_scalar {
using namespace ::dstrain::kernels::half_simd::scalar;
}  // namespace isa_scalar
#if DT_SIMD_X86
namespace isa_avx2 {
using namespace ::dstrain::kernels::half_simd::avx2;
}  // namespace isa_avx2
namespace isa_avx512 {
using namespace ::dstrain::kernels::half_simd::avx512;
}  // namespace isa_avx512
#endif

#define DT_ISA_BODY "kernels/cast/cast_body.inc"
#include "kernels/common/foreach_isa.inc"

// Pieces are cut at multiples of 64 elements: whole cache lines of both the 16-bit and the fp32
// array, so no two threads write one line.
constexpr int64_t kAlign = 64;

// SumSquaresHalf adds fixed blocks of this many elements, then the block sums in order.
constexpr int64_t kSumBlock = int64_t{1} << 14;

template <HalfType kType>
void FloatToHalfT(uint16_t* out, const float* in, int64_t n) {
  const auto fn = DT_ISA_SELECT(FloatToHalfRange<kType>);
  ParallelFor(n, ThreadsFor(n), kAlign,
              [&](int64_t begin, int64_t end) { fn(out + begin, in + begin, end - begin); });
}

template <HalfType kType>
void HalfToFloatT(float* out, const uint16_t* in, int64_t n) {
  const auto fn = DT_ISA_SELECT(HalfToFloatRange<kType>);
  ParallelFor(n, ThreadsFor(n), kAlign,
              [&](int64_t begin, int64_t end) { fn(out + begin, in + begin, end - begin); });
}

template <HalfType kType>
void AccumulateIntoHalfT(uint16_t* acc, const float* in, int64_t n) {
  const auto fn = DT_ISA_SELECT(AccumulateIntoHalfRange<kType>);
  ParallelFor(n, ThreadsFor(n), kAlign,
              [&](int64_t begin, int64_t end) { fn(acc + begin, in + begin, end - begin); });
}

template <HalfType kType>
double SumSquaresHalfT(const uint16_t* x, int64_t n) {
  const auto fn = DT_ISA_SELECT(SumSquaresHalfRange<kType>);
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

}  // namespace

void FloatToHalf(HalfType type, uint16_t* out, const float* in, int64_t n) {
  if (type == HalfType::kBf16) {
    FloatToHalfT<HalfType::kBf16>(out, in, n);
  } else {
    FloatToHalfT<HalfType::kF16>(out, in, n);
  }
}

void HalfToFloat(HalfType type, float* out, const uint16_t* in, int64_t n) {
  if (type == HalfType::kBf16) {
    HalfToFloatT<HalfType::kBf16>(out, in, n);
  } else {
    HalfToFloatT<HalfType::kF16>(out, in, n);
  }
}

void AccumulateIntoHalf(HalfType type, uint16_t* acc, const float* in, int64_t n) {
  if (type == HalfType::kBf16) {
    AccumulateIntoHalfT<HalfType::kBf16>(acc, in, n);
  } else {
    AccumulateIntoHalfT<HalfType::kF16>(acc, in, n);
  }
}

double SumSquaresHalf(HalfType type, const uint16_t* x, int64_t n) {
  return type == HalfType::kBf16 ? SumSquaresHalfT<HalfType::kBf16>(x, n)
                                 : SumSquaresHalfT<HalfType::kF16>(x, n);
}

}  // namespace dstrain::kernels
