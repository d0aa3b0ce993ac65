// Plain launchers of reduce_kernels.cu. REQUIRES: n > 0, valid device pointers of the named types.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/types/dtype.h"

namespace dstrain::comm::nccl_internal {

cudaError_t LaunchToMaxKeys(uint32_t* out, const void* in, DType in_type, int64_t n,
                            cudaStream_t stream);
cudaError_t LaunchFromMaxKeys(void* out, DType out_type, const uint32_t* in, int64_t n,
                              cudaStream_t stream);
cudaError_t LaunchDivideAndNarrow(void* out, DType out_type, const float* in, int64_t n,
                                  float divisor, cudaStream_t stream);

}  // namespace dstrain::comm::nccl_internal
