// CPU reduction and conversion kernels shared by the CPU communication backends (Gloo, Fake).
//
// The numerics every backend keeps (communicator.h): bf16 and f16 are reduced with f32
// accumulation — each element is converted to f32, accumulated, and rounded back once, to nearest
// even. The conversions here are exact (to f32) or correctly rounded (from f32):
//   - f32 -> bf16/f16 rounds to nearest, ties to even; values beyond the largest finite value
//     round to Inf as IEEE 754 prescribes (f16: |x| >= 65520); f16 subnormals are produced
//     correctly; NaN stays NaN (quietened, sign and the top payload bits kept); Inf stays Inf.
//   - bf16/f16 -> f32 is exact; an f16 NaN becomes a quiet f32 NaN (as the F16C instructions do).
// Bulk conversions use AVX2 (bf16) and F16C (f16) when the CPU has them (checked once at run time)
// and the portable code otherwise; both give the same bits.
//
// kAvg is accumulated as a sum and divided once at the end (FinishF32), a division rather than a
// multiplication by the reciprocal. kMax propagates NaN.
//
// All functions are pure and thread-safe. Buffers may not overlap unless stated.
#pragma once

#include <cstdint>

#include "worker/comm/communicator.h"
#include "worker/tensor/tensor.h"

namespace dstrain::comm {

// Scalar conversions.
float Bf16ToF32(uint16_t h);
uint16_t F32ToBf16(float f);
float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);

// True for the dtypes a reduction accepts: f32, bf16, f16.
bool IsReducible(DType dtype);

// dst[i] = f32(src[i]) for `n` elements of `dtype` (REQUIRES: IsReducible). For f32 a copy;
// src == dst is allowed for f32 only.
void ToF32(const void* src, DType dtype, int64_t n, float* dst);
// dst[i] = dtype(src[i]), rounded to nearest even. For f32 a copy (src == dst allowed).
void FromF32(const float* src, int64_t n, DType dtype, void* dst);

// acc[i] = op(acc[i], f32(x[i])): one step of an f32-accumulated reduction; kAvg accumulates the
// sum (divide with FinishF32 once all terms are in).
void AccumulateF32(float* acc, const void* x, DType dtype, int64_t n, ReduceOp op);
// For kAvg divides every element by `world_size`; otherwise does nothing.
void FinishF32(float* acc, int64_t n, ReduceOp op, int world_size);

// acc[i] = op(acc[i], x[i]) in `dtype`, computed in f32 and rounded once per call; kAvg adds
// (callers divide). For f32 this is the plain elementwise reduction (Gloo's reduce function shape).
// For bf16/f16 each call rounds once, so to reduce more than two buffers with a single rounding use
// AccumulateF32 + FinishF32 + FromF32, or ReduceBuffers.
void ReduceInto(void* acc, const void* x, int64_t n, DType dtype, ReduceOp op);

// out = op over inputs[0..k-1] (in that order) with f32 accumulation, rounded once; kAvg divides
// by k. `out` may be one of the inputs (the same address; no partial overlap). One pass, eight
// elements at a time, where the CPU has AVX2 and F16C (the portable code otherwise, same bits):
// the shared-memory collectives' reduction speed is this function's (docs/shm.md).
// REQUIRES: k >= 1, IsReducible(dtype).
void ReduceBuffers(const void* const* inputs, int k, void* out, int64_t n, DType dtype,
                   ReduceOp op);

namespace internal {
// The portable paths, for tests that compare them with the vectorised ones above.
void F16ToF32Portable(const uint16_t* src, int64_t n, float* dst);
void F32ToF16Portable(const float* src, int64_t n, uint16_t* dst);
void F32ToBf16Portable(const float* src, int64_t n, uint16_t* dst);
bool HasF16c();
bool HasAvx2();
// ReduceBuffers without the vectorised loop, for tests that compare the two.
void ReduceBuffersPortable(const void* const* inputs, int k, void* out, int64_t n, DType dtype,
                           ReduceOp op);
}  // namespace internal

}  // namespace dstrain::comm
