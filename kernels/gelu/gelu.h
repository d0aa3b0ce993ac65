// GELU activation, tanh approximation (GPT-2):
//   gelu(x) = 0.5·x·(1 + tanh(u)),  u = √(2/π)·(x + 0.044715·x³).
//
// Computed as x·σ(2u) with σ the logistic sigmoid, which equals 0.5·(1 + tanh u) exactly but needs
// one exp and has no cancellation for either sign of u. The derivative is
//   gelu'(x) = σ + 2x·σ(1−σ)·√(2/π)·(1 + 3·0.044715·x²),  with σ(1−σ) = e·σ² for e = exp(−2u),
// again free of cancellation. The vectorised exp is simd_math.inc's (max relative error ~1.2e-7).
// Measured error vs the float64 reference (gelu_test, every ISA, 200K points in [-12, 12]):
// forward ≤ 5.2e-7 absolute (at |x| ≈ 12, i.e. ~4e-8 relative) and ≤ 1e-6 relative wherever
// |gelu| ≥ 1e-3; backward ≤ 2e-7 absolute. The relative error of tiny outputs in the negative tail
// grows with |2u| (float rounding of u, amplified by exp): inherent to fp32 inputs.
//
// Contracts: GeluForward overwrites `out`; GeluBackward OVERWRITES `dinp` with gelu'(inp)·dout (the
// caller adds it to a residual gradient if needed). Either output may alias `inp`/`dout`.
// Element-wise, so bitwise identical for any thread count.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

void GeluForward(float* out,        // (n)
                 const float* inp,  // (n)
                 int64_t n);

// The same with out in bf16 (uint16_t storage): gelu in fp32 as above, rounded to nearest even
// once as it is stored (the bits of the fp32 output rounded by kernels/cast afterwards). For the
// activation only a bf16 matrix product reads. May not alias inp.
void GeluForward(uint16_t* out_bf16,  // (n)
                 const float* inp,    // (n)
                 int64_t n);

void GeluBackward(float* dinp,        // (n) overwritten
                  const float* inp,   // (n)
                  const float* dout,  // (n)
                  int64_t n);

}  // namespace dstrain::kernels
