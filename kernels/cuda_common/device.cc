#include "kernels/cuda_common/device.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"

namespace dstrain::kernels::gpu {

absl::Status CudaDeviceStatus() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();  // not sticky; do not leave it for the next check
    return absl::FailedPreconditionError(absl::StrCat("no CUDA device: cudaGetDeviceCount -> ",
                                                      cudaGetErrorName(error), " (",
                                                      cudaGetErrorString(error), ")"));
  }
  if (count == 0) return absl::FailedPreconditionError("no CUDA device: 0 devices");
  return absl::OkStatus();
}

bool HasCudaDevice() { return CudaDeviceStatus().ok(); }

}  // namespace dstrain::kernels::gpu
