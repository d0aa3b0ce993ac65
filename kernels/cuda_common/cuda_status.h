// CUDA runtime errors as absl::Status, for host code (launchers' wrappers, tests, tools).
//
//   DT_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
//   DT_CUDA_RETURN_IF_ERROR(LaunchGeluForward(out, inp, n, stream));  // returns cudaError_t
//
// Device code never reports errors; each launcher returns cudaGetLastError() after its launches
// and its caller checks that with DT_CUDA_RETURN_IF_ERROR (docs/architecture.md, "Errors").
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"

namespace dstrain::kernels::gpu {

// OK for cudaSuccess. Otherwise a Status whose message names the error (cudaGetErrorName and
// cudaGetErrorString), the failed expression `what` and file:line, with the code:
//   cudaErrorMemoryAllocation                         -> kResourceExhausted
//   cudaErrorNoDevice, cudaErrorInsufficientDriver    -> kFailedPrecondition
//   anything else (a launch or kernel failure, ...)   -> kInternal
// Also calls cudaGetLastError(), which clears a non-sticky error so it does not resurface at the
// next, unrelated check (sticky errors such as a kernel fault stay until the context is reset).
absl::Status CudaToStatus(cudaError_t error, const char* what, const char* file, int line);

}  // namespace dstrain::kernels::gpu

// Evaluates `expr` (a cudaError_t); returns the corresponding absl::Status when not cudaSuccess.
#define DT_CUDA_RETURN_IF_ERROR(expr)                                                          \
  do {                                                                                         \
    const cudaError_t dt_cuda_error_ = (expr);                                                 \
    if (dt_cuda_error_ != cudaSuccess) {                                                       \
      return ::dstrain::kernels::gpu::CudaToStatus(dt_cuda_error_, #expr, __FILE__, __LINE__); \
    }                                                                                          \
  } while (0)
