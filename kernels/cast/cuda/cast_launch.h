// Plain launcher of cast.cu. REQUIRES: n > 0, valid device pointers of the named types, types
// not equal (equal types are a copy, done by the caller).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/types/dtype.h"

namespace dstrain::kernels::gpu {

cudaError_t LaunchCast(void* out, DType out_type, const void* in, DType in_type, int64_t n,
                       cudaStream_t stream);
// acc (bf16 or f16) = round(float(acc) + x).
cudaError_t LaunchAccumulateInto(void* acc, DType acc_type, const float* x, int64_t n,
                                 cudaStream_t stream);
// x (f32, bf16 or f16) = value, rounded once.
cudaError_t LaunchFill(void* x, DType type, float value, int64_t n, cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
