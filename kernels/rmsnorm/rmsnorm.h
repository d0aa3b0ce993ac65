// Root-mean-square layer normalisation over the last dimension (Zhang & Sennrich 2019; the norm of
// the Llama family, Hugging Face's LlamaRMSNorm): no mean subtraction, no bias,
//   rstd = 1 / sqrt(Σ_c x_c² / C + eps),   out_c = (x_c · rstd) · weight_c.
// eps is an argument: Llama configs use rms_norm_eps = 1e-5 (Llama 2/3) or 1e-6 (Llama 1).
// rstd is stored per row for the backward pass, as LayerNormForward stores mean and rstd.
// Σ x² has no cancellation (every term is >= 0), so one pass with float accumulators is accurate:
// the sum's relative error is bounded by the depth of the per-lane sums (C / (2·lanes) terms)
// times 2^-24.
//
// Backward, with n = x·rstd and g = dout·weight:
//   dinp    += rstd · (g − n · mean_c(g·n))       ACCUMULATES: inp is the residual stream
//   dweight += Σ_rows dout · n                     ACCUMULATES
// (from ∂rstd/∂x_j = −rstd³·x_j / C).
//
// Precision: fp32 in, fp32 out, like LayerNorm, GELU and attention. In this engine's bf16 mixed
// precision only GEMM operands are rounded to bf16 (device::LinearOptions::compute); the
// activations that reach the norms stay fp32, so there is no bf16 variant (nor one of LayerNorm).
//
// Threading and determinism, exactly as layernorm.h: rows are independent, so out/rstd/dinp are
// split across threads freely; dweight is a reduction over rows, cut into fixed chunks of 32 rows
// (the partition depends only on N), each chunk summed in row order into its own partial and the
// partials added to dweight in chunk order. Results are therefore bitwise identical for any thread
// count (for a given ISA; AVX-512, AVX2 and scalar order the per-row sums differently and agree to
// ~1e-7 relative).
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// rstd may be null (inference: nothing is stored). out may alias inp exactly.
void RmsNormForward(float* out,           // (N, C)
                    float* rstd,          // (N)
                    const float* inp,     // (N, C)
                    const float* weight,  // (C)
                    int64_t N, int C, float eps);

// The same with out in bf16 (uint16_t storage, not aliasing inp): each value computed as above
// and rounded to nearest even once as it is stored (the bits of the fp32 out rounded afterwards
// by kernels/cast). For the activation only a bf16 matrix product reads.
void RmsNormForward(uint16_t* out_bf16,   // (N, C)
                    float* rstd,          // (N)
                    const float* inp,     // (N, C)
                    const float* weight,  // (C)
                    int64_t N, int C, float eps);

void RmsNormBackward(float* dinp,          // (N, C) accumulated
                     float* dweight,       // (C) accumulated
                     const float* dout,    // (N, C)
                     const float* inp,     // (N, C)
                     const float* weight,  // (C)
                     const float* rstd,    // (N) from RmsNormForward
                     int64_t N, int C);

}  // namespace dstrain::kernels
