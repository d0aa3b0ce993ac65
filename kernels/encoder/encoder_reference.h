// Float64 reference for encoder.h.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// out[b, t, :] = wte[tokens[b, t], :] + wpe[t, :] (overwrites).
void EncoderForwardReference(double* out,            // (B, T, C)
                             const int32_t* tokens,  // (B, T)
                             const double* wte,      // (Vp, C)
                             const double* wpe,      // (maxT, C)
                             int B, int T, int C);

// dwte[tokens[b, t]] += dout[b, t]; dwpe[t] += dout[b, t] (accumulates).
void EncoderBackwardReference(double* dwte,           // (Vp, C)
                              double* dwpe,           // (maxT, C)
                              const double* dout,     // (B, T, C)
                              const int32_t* tokens,  // (B, T)
                              int B, int T, int C);

}  // namespace dstrain::kernels
