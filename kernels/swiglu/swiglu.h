// SwiGLU activation of the Llama MLP (Shazeer 2020, "GLU Variants Improve Transformer"):
//   out = silu(gate) ∘ up,   silu(g) = g·σ(g),  σ the logistic sigmoid,
// on the output of ONE fused GEMM: inp (N, 2I) = x · [W_gate; W_up]ᵀ, i.e. each row holds the I
// gate values in columns [0, I) and the I up values in columns [I, 2I) ("[gate | up]": the
// weights of Hugging Face's gate_proj and up_proj stacked row-wise into one (2I, C) nn.Linear
// weight). One GEMM of width 2I is faster than two of width I, and the backward pass produces
// the matching (N, 2I) gradient for that GEMM's backward in one piece.
//
// Backward, with s = σ(g) and e = exp(−g) (so 1 − s = e·s, no cancellation):
//   d up   = dout · silu(g)
//   d gate = dout · up · silu'(g),   silu'(g) = s·(1 + g·(1 − s)) = s·(1 + g·(e·s))
// e·s is formed before it meets g, so nothing overflows for very negative g. The vectorised exp
// (simd_math.inc) is clamped to [-87.3, 88]: silu of g < −87 is ~1e-37 instead of ~g·e^g (both
// negligible next to the values around them).
//
// Precision: fp32 in, fp32 out, as GELU (rmsnorm.h, "Precision", says why there is no bf16 copy).
//
// Contracts: SwiGluForward overwrites `out` (which must not overlap inp); SwiGluBackward
// OVERWRITES `dinp` (N, 2I) — gate gradients in columns [0, I), up gradients in [I, 2I) — and
// dinp may alias inp exactly (the pre-activations are dead after the backward pass). Element-wise
// per row, rows split across threads: bitwise identical for any thread count.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

void SwiGluForward(float* out,        // (N, I)
                   const float* inp,  // (N, 2I): [gate | up]
                   int64_t N, int I);

// The same with out in bf16 (uint16_t storage): each value rounded to nearest even once as it is
// stored (the bits of the fp32 out rounded afterwards by kernels/cast). For the activation only a
// bf16 matrix product reads.
void SwiGluForward(uint16_t* out_bf16,  // (N, I)
                   const float* inp,    // (N, 2I): [gate | up]
                   int64_t N, int I);

void SwiGluBackward(float* dinp,        // (N, 2I) overwritten: [d gate | d up]
                    const float* inp,   // (N, 2I): [gate | up]
                    const float* dout,  // (N, I)
                    int64_t N, int I);

}  // namespace dstrain::kernels
