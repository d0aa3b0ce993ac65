// Layer normalisation over the last dimension, as torch.nn.LayerNorm (biased variance, eps 1e-5):
//   mean = Σ_c x_c / C,  rstd = 1 / sqrt(Σ_c (x_c − mean)² / C + 1e-5),
//   out_c = (x_c − mean) · rstd · weight_c + bias_c.
// Forward makes two passes over each row: a first mean m0, then Σ(x − m0) and Σ(x − m0)², which
// correct m0's rounding and give the centred variance (the corrected two-pass algorithm: no
// E[x²] − mean² cancellation, accurate even for rows with a large common offset). mean and rstd
// are stored for the backward pass.
//
// Backward, with n = (x − mean)·rstd and g = dout·weight:
//   dinp  += rstd · (g − mean_c(g) − n · mean_c(g·n))     ACCUMULATES: inp is the residual stream
//   dweight += Σ_rows dout · n                             ACCUMULATES
//   dbias   += Σ_rows dout                                 ACCUMULATES
//
// Threading and determinism: rows are independent, so out/mean/rstd/dinp are split across threads
// freely. dweight and dbias are reductions over rows: the rows are cut into fixed chunks of 32
// (the partition depends only on N, never on the thread count or timing), each chunk sums its
// rows in order into its own partial, and the partials are added to dweight/dbias in chunk
// order. Results are therefore bitwise identical for any thread count (for a given ISA; AVX-512,
// AVX2 and scalar order the per-row sums differently and agree to ~1e-7 relative).
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// mean and rstd may be null (inference: nothing is stored).
void LayerNormForward(float* out,           // (N, C)
                      float* mean,          // (N)
                      float* rstd,          // (N)
                      const float* inp,     // (N, C)
                      const float* weight,  // (C)
                      const float* bias,    // (C)
                      int64_t N, int C);

// The same with out in bf16 (uint16_t storage): each value computed as above in fp32 and rounded
// to nearest even once as it is stored, so the bits of the fp32 output rounded afterwards
// (kernels/cast), without the fp32 array. For the activations only bf16 matrix products read.
void LayerNormForward(uint16_t* out_bf16, float* mean, float* rstd, const float* inp,
                      const float* weight, const float* bias, int64_t N, int C);

void LayerNormBackward(float* dinp,          // (N, C) accumulated
                       float* dweight,       // (C) accumulated
                       float* dbias,         // (C) accumulated
                       const float* dout,    // (N, C)
                       const float* inp,     // (N, C)
                       const float* weight,  // (C)
                       const float* mean,    // (N) from LayerNormForward
                       const float* rstd,    // (N) from LayerNormForward
                       int64_t N, int C);

}  // namespace dstrain::kernels
