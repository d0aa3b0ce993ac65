// The element-wise kernels around NCCL reductions that keep communicator.h's numerics (NOTE [NCCL
// reductions] in nccl_communicator.h):
//   - max as an integer max over order-preserving uint32 keys, so that a NaN on any rank makes the
//     element NaN (NCCL's float max is fmaxf, which drops NaNs);
//   - average as a sum followed by one division by the world size (not ncclAvg, which multiplies
//     every contribution by 1/size before summing).
//
// Keys: a float's bits b become (b | 0x80000000) for a clear sign bit and ~b for a set one, so that
// unsigned order is float order with -0 < +0; every NaN becomes the canonical quiet NaN 0x7fc00000
// first, whose key lies above +inf. Hence max over keys is max over floats, except that any NaN
// wins (as the canonical NaN: payloads and signs of NaNs are not kept) and max(-0, +0) = +0.
// bf16 and f16 values are widened to f32 (exactly) before they become keys, and narrowed back
// (exactly: the maximum is one of the inputs) from them.
//
// Device pointers; enqueued on `stream`, not waited for. n == 0 does nothing. Errors:
// kInvalidArgument for n < 0 or null pointers with n > 0; CUDA failures via CudaToStatus.
// `in` and `out` may be the same buffer where stated, otherwise they must not overlap.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/types/dtype.h"

namespace dstrain::comm::nccl_internal {

// out[i] = key(float(in[i])). `in` may be `out` when in_type is f32.
absl::Status ToMaxKeys(uint32_t* out,                  // (n)
                       const void* in, DType in_type,  // (n)
                       int64_t n, cudaStream_t stream);

// out[i] = out_type(float of key in[i]). `out` may be `in` when out_type is f32.
absl::Status FromMaxKeys(void* out, DType out_type,  // (n)
                         const uint32_t* in,         // (n)
                         int64_t n, cudaStream_t stream);

// out[i] = out_type(in[i] / divisor): an f32 division, then (bf16, f16) one round to nearest even.
// `out` may be `in` when out_type is f32. REQUIRES: divisor > 0.
absl::Status DivideAndNarrow(void* out, DType out_type,  // (n)
                             const float* in,            // (n)
                             int64_t n, float divisor, cudaStream_t stream);

}  // namespace dstrain::comm::nccl_internal
