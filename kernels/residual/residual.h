// Element-wise kernels on flat fp32 arrays: the residual add of a transformer block, in-place
// accumulation and scaling (gradient accumulation, clipping), a deterministic sum of squares
// (gradient norms) and fill.
//
// Contracts: ResidualForward overwrites `out` (which may alias `a` or `b`); AddInPlace accumulates
// into `y`; Scale and Fill overwrite in place. All are vectorised (AVX-512 / AVX2 / scalar chosen
// at run time) and split across OpenMP threads above ~32K elements. Every result except SumSquares
// is exact IEEE single precision, so it is bitwise identical on every ISA and thread count.
// SumSquares squares exactly in double and sums in double over fixed 16K-element blocks combined
// in block order: bitwise identical for any thread count (not across ISAs, whose lane order
// differs), and within ~1e-15 relative of the exact sum.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// out = a + b.
void ResidualForward(float* out,      // (n)
                     const float* a,  // (n)
                     const float* b,  // (n)
                     int64_t n);

// y += x.
void AddInPlace(float* y,        // (n)
                const float* x,  // (n)
                int64_t n);

// x *= s.
void Scale(float* x,  // (n)
           int64_t n, float s);

// Σ x² in double.
double SumSquares(const float* x,  // (n)
                  int64_t n);

// x = v.
void Fill(float* x,  // (n)
          int64_t n, float v);

}  // namespace dstrain::kernels
