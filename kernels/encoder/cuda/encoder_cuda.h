// Token + position embedding on the GPU (CUDA); same math and contracts as
// kernels/encoder/encoder.h:
//   out[b, t, :] = wte[tokens[b, t], :] + wpe[t, :]                         (overwrites out)
//   dwte[v] += Σ over (b, t) with tokens[b, t] == v of dout[b, t]; dwpe[t] += Σ_b dout[b, t]
//
// Determinism: the backward pass is bitwise reproducible run to run, with no float atomics. One
// thread block per (b, t) position checks whether the token already occurred at an earlier
// position; the block of the first occurrence ("leader") then sums dout over all positions with
// that token, in position order, into dwte[token]. So each dwte row has exactly one writer, and
// dwpe[t] is summed over b in order by one thread per element. (Summation order differs from the
// CPU kernel's, so CPU and GPU agree to rounding, not bitwise.)
//
// All pointers are device pointers; work is enqueued on `stream` and not waited for. Tokens must
// lie in [0, Vp) (not checked: the device data is not read on the host). Errors: kInvalidArgument
// for negative sizes or null pointers with work to do; CUDA failures via CudaToStatus.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace dstrain::kernels::gpu {

absl::Status EncoderForward(float* out,             // (B, T, C)
                            const int32_t* tokens,  // (B, T)
                            const float* wte,       // (Vp, C)
                            const float* wpe,       // (maxT, C), maxT >= T
                            int B, int T, int C, cudaStream_t stream);

// The same with a bf16 token table (bf16 parameter storage), each row widened exactly as read:
// bitwise EncoderForward on the widened table.
absl::Status EncoderForwardBf16(float* out,                // (B, T, C)
                                const int32_t* tokens,     // (B, T)
                                const __nv_bfloat16* wte,  // (Vp, C)
                                const float* wpe,          // (maxT, C), maxT >= T
                                int B, int T, int C, cudaStream_t stream);

absl::Status EncoderBackward(float* dwte,            // (Vp, C) accumulated
                             float* dwpe,            // (maxT, C) accumulated, rows [0, T) touched
                             const float* dout,      // (B, T, C)
                             const int32_t* tokens,  // (B, T)
                             int B, int T, int C, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
