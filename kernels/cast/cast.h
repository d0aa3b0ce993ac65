// 16-bit floating-point storage on the CPU: bf16 and IEEE fp16 conversions, gradient
// accumulation into 16-bit buffers, and the sum of squares of 16-bit gradients (the global norm
// and the inf/NaN overflow check of mixed-precision training in one pass).
//
// Rounding is to nearest, ties to even, everywhere (subnormals included); NaN stays NaN, ±inf
// stays ±inf, and an fp32 value beyond fp16's range (|x| >= 65520) becomes ±inf, as the hardware
// conversions do. The exact NaN bits and how each ISA gets these results are in half_simd.h.
// Vectorised (AVX-512, AVX2, scalar; chosen at run time, capped by DSTRAIN_MAX_ISA), split over
// the OpenMP pool for large n, bitwise identical for any thread count and any ISA.
// Element-wise functions overwrite their output (AccumulateIntoHalf updates acc in place); the
// output must not partly overlap the input. `type` is DType::kBF16 or DType::kF16 (checked).
#pragma once

#include <cstdint>

#include "common/types/dtype.h"

namespace dstrain::kernels {

// out[i] = round16(in[i]).
void FloatToHalf(DType type, uint16_t* out, const float* in, int64_t n);
// out[i] = float(in[i]) (exact).
void HalfToFloat(DType type, float* out, const uint16_t* in, int64_t n);
// out[i] = float(round16(in[i])): the fp32 value of the rounded number, FloatToHalf then
// HalfToFloat in one pass (what a product of rounded operands needs where it runs in fp32). out
// may be in itself.
void RoundToHalf(DType type, float* out, const float* in, int64_t n);
// A gradient's cast and its column sums in one read of `in` (rows, cols), what a linear layer's
// 16-bit backward needs of dout (the products' operand and the bias gradient): out16 =
// FloatToHalf(in) or out32 = RoundToHalf(in), exactly one of them non-null, and colsum (cols) +=
// the column sums of in. Each column adds its rows in order into a float starting from zero,
// then that float into colsum[j]: the bits of that loop for any thread count and ISA.
void CastWithColumnSums(DType type, uint16_t* out16, float* out32, float* colsum, const float* in,
                        int64_t rows, int64_t cols);
// acc[i] = round16(float(acc[i]) + in[i]): gradient accumulation into 16-bit storage.
void AccumulateIntoHalf(DType type, uint16_t* acc, const float* in, int64_t n);
// Σ float(x[i])², squares exact in double and summed in double over fixed blocks (the result
// is independent of the thread count); any inf or NaN in x makes the result inf or NaN.
// Within a block every ISA adds in the same order, so the result is also bitwise the same on
// every ISA; it is within (517 + n / 16384) · 2^-53 relative of the exact sum.
double SumSquaresHalf(DType type, const uint16_t* x, int64_t n);

}  // namespace dstrain::kernels
