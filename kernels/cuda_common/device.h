// Whether this process can run CUDA kernels at all. Safe on machines without a GPU or without the
// NVIDIA driver: the CUDA runtime loads the driver lazily and cudaGetDeviceCount then returns an
// error code (e.g. cudaErrorInsufficientDriver, cudaErrorNoDevice), which counts as "no device".
// Thread-safe; asks the runtime on every call (cheap after the first).
#pragma once

#include "absl/status/status.h"

namespace dstrain::kernels::gpu {

// OK when at least one CUDA device is usable; otherwise kFailedPrecondition whose message says
// why (the runtime's error, or "no CUDA device"), suitable for a GTEST_SKIP() message or a log
// line.
absl::Status CudaDeviceStatus();

// CudaDeviceStatus().ok().
bool HasCudaDevice();

}  // namespace dstrain::kernels::gpu
