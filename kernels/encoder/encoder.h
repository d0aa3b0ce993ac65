// Token + position embedding, the first layer of GPT-2:
//   out[b, t, :] = wte[tokens[b, t], :] + wpe[t, :].
//
// Contracts: EncoderForward overwrites `out`. EncoderBackward ACCUMULATES (+=) into dwte and dwpe
// (gradient accumulation over micro-steps): dwte[v] += Σ over (b, t) with tokens[b, t] == v of
// dout[b, t]; dwpe[t] += Σ_b dout[b, t]. Tokens must lie in [0, Vp).
//
// Determinism: in the backward pass every dwte row (token) and every dwpe row (position) is owned
// by one thread, which adds the dout rows into it in (b, t) order. The additions into each
// element are therefore the same, in the same order, for any thread count and any ISA: the
// results are bitwise reproducible, and no two threads ever touch one row.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

void EncoderForward(float* out,             // (B, T, C)
                    const int32_t* tokens,  // (B, T)
                    const float* wte,       // (Vp, C)
                    const float* wpe,       // (maxT, C), maxT >= T
                    int B, int T, int C);

// The same with a bf16 token table (bf16 parameter storage): each row is widened (exactly) as it is
// read, so out is bitwise EncoderForward on the widened table.
void EncoderForwardBf16(float* out,             // (B, T, C)
                        const int32_t* tokens,  // (B, T)
                        const uint16_t* wte16,  // (Vp, C) bf16
                        const float* wpe,       // (maxT, C), maxT >= T
                        int B, int T, int C);

void EncoderBackward(float* dwte,            // (Vp, C) accumulated
                     float* dwpe,            // (maxT, C) accumulated, rows [0, T) touched
                     const float* dout,      // (B, T, C)
                     const int32_t* tokens,  // (B, T)
                     int B, int T, int C);

}  // namespace dstrain::kernels
