#include "worker/device/cuda/pinned_host_allocator.h"

#include <cuda_runtime.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace dstrain::device {

absl::StatusOr<void*> PinnedHostAllocator::Allocate(size_t bytes, tensor::MemoryCategory category) {
  const int64_t in_use = Stats().total_current();
  if (limit_bytes_ > 0 && in_use + static_cast<int64_t>(bytes) > limit_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "page-locked host memory: ", bytes, " bytes for ", tensor::MemoryCategoryName(category),
        " exceed the budget of ", limit_bytes_, " (", in_use, " in use)"));
  }
  void* p = nullptr;
  // Zero bytes still returns a distinct non-null block (the Allocator contract).
  const cudaError_t e = cudaHostAlloc(&p, bytes > 0 ? bytes : 1, cudaHostAllocDefault);
  if (e != cudaSuccess || p == nullptr) {
    cudaGetLastError();  // ours now
    return absl::ResourceExhaustedError(absl::StrCat(
        "page-locked host memory: cudaHostAlloc of ", bytes, " bytes for ",
        tensor::MemoryCategoryName(category), " failed (", cudaGetErrorName(e), "; ", in_use,
        " bytes locked by this rank); set zero_optimization.offload_optimizer.pin_memory false "
        "or raise the locked-memory limit (ulimit -l)"));
  }
  Account(category, static_cast<int64_t>(bytes));
  return p;
}

void PinnedHostAllocator::Free(void* p, size_t bytes, tensor::MemoryCategory category) {
  if (p == nullptr) return;
  cudaFreeHost(p);
  Account(category, -static_cast<int64_t>(bytes));
}

void PinnedHostAllocator::Zero(void* p, size_t bytes) {
  if (bytes > 0) std::memset(p, 0, bytes);
}

}  // namespace dstrain::device
