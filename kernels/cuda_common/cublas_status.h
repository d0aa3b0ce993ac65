// cuBLAS status codes as absl::Status.
//
//   DT_CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle, stream));
#pragma once

#include <cublas_v2.h>

#include "absl/status/status.h"

namespace dstrain::kernels::gpu {

// OK for CUBLAS_STATUS_SUCCESS. Otherwise a Status naming the status, `what` and file:line, with
// the code: CUBLAS_STATUS_ALLOC_FAILED -> kResourceExhausted, CUBLAS_STATUS_INVALID_VALUE ->
// kInvalidArgument, CUBLAS_STATUS_NOT_SUPPORTED / ARCH_MISMATCH -> kUnimplemented, anything else
// -> kInternal.
absl::Status CublasToStatus(cublasStatus_t status, const char* what, const char* file, int line);

}  // namespace dstrain::kernels::gpu

#define DT_CUBLAS_RETURN_IF_ERROR(expr)                                                  \
  do {                                                                                   \
    const cublasStatus_t dt_cublas_status_ = (expr);                                     \
    if (dt_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                    \
      return ::dstrain::kernels::gpu::CublasToStatus(dt_cublas_status_, #expr, __FILE__, \
                                                     __LINE__);                          \
    }                                                                                    \
  } while (0)
