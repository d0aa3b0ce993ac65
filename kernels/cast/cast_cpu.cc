#include <cstdint>
#include <vector>

#include "common/status/status_macros.h"
#include "kernels/cast/cast.h"
#include "kernels/cast/half_simd.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"

namespace dstrain::kernels {
namespace {

// The 16-bit loads and stores join simd.h's vocabulary in each ISA build of the body.
#include "kernels/cast/half_simd_isa.inc"

#define DT_ISA_BODY "kernels/cast/cast_body.inc"
#include "kernels/common/foreach_isa.inc"

// Pieces are cut at multiples of 64 elements: whole cache lines of both the 16-bit and the fp32
// array, so no two threads write one line.
constexpr int64_t kAlign = 64;

// SumSquaresHalf adds fixed blocks of this many elements, then the block sums in order.
constexpr int64_t kSumBlock = int64_t{1} << 14;

template <DType kType>
void FloatToHalfT(uint16_t* out, const float* in, int64_t n) {
  const auto fn = DT_ISA_SELECT(FloatToHalfRange<kType>);
  ParallelFor(n, ThreadsFor(n), kAlign,
              [&](int64_t begin, int64_t end) { fn(out + begin, in + begin, end - begin); });
}

template <DType kType>
void HalfToFloatT(float* out, const uint16_t* in, int64_t n) {
  const auto fn = DT_ISA_SELECT(HalfToFloatRange<kType>);
  ParallelFor(n, ThreadsFor(n), kAlign,
              [&](int64_t begin, int64_t end) { fn(out + begin, in + begin, end - begin); });
}

template <DType kType>
void RoundToHalfT(float* out, const float* in, int64_t n) {
  const auto fn = DT_ISA_SELECT(RoundToHalfRange<kType>);
  ParallelFor(n, ThreadsFor(n), kAlign,
              [&](int64_t begin, int64_t end) { fn(out + begin, in + begin, end - begin); });
}

template <DType kType>
void CastWithColumnSumsT(uint16_t* out16, float* out32, float* colsum, const float* in,
                         int64_t rows, int64_t cols) {
  const auto fn = DT_ISA_SELECT(CastRowsSummingColumns<kType>);
  // Threads own strips of whole columns (64 at least), so each column's sum is one thread's loop
  // over its rows in order. Strips meet mid-line where a row is not a whole number of lines
  // (false sharing, not a wrong result), and fewer than 64 columns leave threads idle: the
  // bits of every column's sum come first. acc is per call, not the thread's kernel scratch,
  // which the caller's dout operand may occupy (matmul_cpu.cc).
  ParallelFor(cols, ThreadsFor(rows * cols), kAlign, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(end - begin, 0.f);
    fn(out16 != nullptr ? out16 + begin : nullptr, out32 != nullptr ? out32 + begin : nullptr,
       acc.data(), in + begin, rows, end - begin, cols);
    for (int64_t j = begin; j < end; ++j) colsum[j] += acc[j - begin];
  });
}

template <DType kType>
void AccumulateIntoHalfT(uint16_t* acc, const float* in, int64_t n) {
  const auto fn = DT_ISA_SELECT(AccumulateIntoHalfRange<kType>);
  ParallelFor(n, ThreadsFor(n), kAlign,
              [&](int64_t begin, int64_t end) { fn(acc + begin, in + begin, end - begin); });
}

template <DType kType>
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

void FloatToHalf(DType type, uint16_t* out, const float* in, int64_t n) {
  DT_CHECK(IsHalf(type));
  if (type == DType::kBF16) {
    FloatToHalfT<DType::kBF16>(out, in, n);
  } else {
    FloatToHalfT<DType::kF16>(out, in, n);
  }
}

void HalfToFloat(DType type, float* out, const uint16_t* in, int64_t n) {
  DT_CHECK(IsHalf(type));
  if (type == DType::kBF16) {
    HalfToFloatT<DType::kBF16>(out, in, n);
  } else {
    HalfToFloatT<DType::kF16>(out, in, n);
  }
}

void RoundToHalf(DType type, float* out, const float* in, int64_t n) {
  DT_CHECK(IsHalf(type));
  if (type == DType::kBF16) {
    RoundToHalfT<DType::kBF16>(out, in, n);
  } else {
    RoundToHalfT<DType::kF16>(out, in, n);
  }
}

void CastWithColumnSums(DType type, uint16_t* out16, float* out32, float* colsum, const float* in,
                        int64_t rows, int64_t cols) {
  DT_CHECK(IsHalf(type));
  DT_CHECK((out16 == nullptr) != (out32 == nullptr) && colsum != nullptr);
  if (type == DType::kBF16) {
    CastWithColumnSumsT<DType::kBF16>(out16, out32, colsum, in, rows, cols);
  } else {
    CastWithColumnSumsT<DType::kF16>(out16, out32, colsum, in, rows, cols);
  }
}

void AccumulateIntoHalf(DType type, uint16_t* acc, const float* in, int64_t n) {
  DT_CHECK(IsHalf(type));
  if (type == DType::kBF16) {
    AccumulateIntoHalfT<DType::kBF16>(acc, in, n);
  } else {
    AccumulateIntoHalfT<DType::kF16>(acc, in, n);
  }
}

double SumSquaresHalf(DType type, const uint16_t* x, int64_t n) {
  DT_CHECK(IsHalf(type));
  return type == DType::kBF16 ? SumSquaresHalfT<DType::kBF16>(x, n)
                              : SumSquaresHalfT<DType::kF16>(x, n);
}

}  // namespace dstrain::kernels
