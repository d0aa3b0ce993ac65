// Element type conversions on the GPU (CUDA): fp32 <-> bf16 and fp32 <-> fp16.
//
// Narrowing rounds to nearest, ties to even (__float2bfloat16_rn / __float2half_rn): values past
// the largest finite narrow value (by at least half an ulp) become ±inf, tiny values become
// subnormals or ±0, NaN stays NaN (payload not kept). Widening is exact. Element-wise: output
// overwritten, deterministic. The output must not overlap the input.
//
// Device pointers; enqueued on `stream`, not waited for. Errors: kInvalidArgument for n < 0 or
// null pointers with n > 0; CUDA failures via CudaToStatus.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/types/dtype.h"

namespace dstrain::kernels::gpu {

absl::Status CastFloatToBf16(__nv_bfloat16* out,  // (n)
                             const float* in,     // (n)
                             int64_t n, cudaStream_t stream);

absl::Status CastBf16ToFloat(float* out,               // (n)
                             const __nv_bfloat16* in,  // (n)
                             int64_t n, cudaStream_t stream);

absl::Status CastFloatToHalf(__half* out,      // (n)
                             const float* in,  // (n)
                             int64_t n, cudaStream_t stream);

absl::Status CastHalfToFloat(float* out,        // (n)
                             const __half* in,  // (n)
                             int64_t n, cudaStream_t stream);

// Any of the above, or a copy when the types are equal. Between bf16 and fp16 the value goes
// through fp32 (exact), then rounds once.
absl::Status Cast(void* out, DType out_type, const void* in, DType in_type, int64_t n,
                  cudaStream_t stream);

// Gradient accumulation into 16-bit storage: acc[i] = round16(float(acc[i]) + x[i]), rounding to
// nearest even once (bitwise what kernels/cast/cast.h's AccumulateIntoHalf computes for finite
// values). acc_type is kBF16 or kF16 (kInvalidArgument otherwise).
absl::Status AccumulateIntoHalf(void* acc,  // (n) bf16 or f16, updated
                                DType acc_type,
                                const float* x,  // (n)
                                int64_t n, cudaStream_t stream);

// x[i] = value rounded once to x's type (f32, bf16 or f16).
absl::Status FillTyped(void* x,  // (n)
                       DType type, float value, int64_t n, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
