#include "worker/device/cuda/cuda_allocator.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dstrain::device {
namespace {

constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t{2} << 20;
constexpr size_t kLargeFrom = size_t{1} << 20;

std::string Megabytes(int64_t bytes) { return absl::StrFormat("%.1f MB", bytes / 1e6); }

}  // namespace

size_t CudaAllocator::RoundSize(size_t bytes) {
  if (bytes == 0) return kSmallRound;
  const size_t unit = bytes < kLargeFrom ? kSmallRound : kLargeRound;
  return (bytes + unit - 1) / unit * unit;
}

CudaAllocator::CudaAllocator(int device, cudaStream_t stream, int64_t limit_bytes)
    : device_(device), stream_(stream), limit_bytes_(limit_bytes) {}

CudaAllocator::~CudaAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  cudaStreamSynchronize(stream_);
  ReleaseCache();
}

void CudaAllocator::ReleaseCache() {
  for (auto& [size, p] : free_) cudaFree(p);
  free_.clear();
  cached_ = 0;
}

absl::StatusOr<void*> CudaAllocator::Allocate(size_t bytes, tensor::MemoryCategory category) {
  const size_t size = RoundSize(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (limit_bytes_ > 0 && Stats().total_current() + static_cast<int64_t>(bytes) > limit_bytes_) {
    return absl::ResourceExhaustedError(OutOfMemory(
        bytes, category, absl::StrCat("the allocator's budget of ", Megabytes(limit_bytes_))));
  }
  void* p = nullptr;
  auto cached = free_.find(size);
  if (cached != free_.end()) {
    p = cached->second;
    free_.erase(cached);
    cached_ -= static_cast<int64_t>(size);
  } else {
    cudaSetDevice(device_);
    cudaError_t e = cudaMalloc(&p, size);
    if (e != cudaSuccess) {
      // The cache may hold what this needs, in other sizes: give it all back and try once more.
      cudaGetLastError();
      cudaStreamSynchronize(stream_);
      ReleaseCache();
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(
          OutOfMemory(bytes, category, absl::StrCat("device memory (", cudaGetErrorName(e), ")")));
    }
    ++driver_allocations_;
  }
  Account(category, static_cast<int64_t>(bytes));
  return p;
}

void CudaAllocator::Free(void* p, size_t bytes, tensor::MemoryCategory category) {
  if (p == nullptr) return;
  const size_t size = RoundSize(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  free_.emplace(size, p);
  cached_ += static_cast<int64_t>(size);
  Account(category, -static_cast<int64_t>(bytes));
}

void CudaAllocator::Zero(void* p, size_t bytes) {
  if (bytes > 0) cudaMemsetAsync(p, 0, bytes, stream_);
}

void CudaAllocator::set_expected(std::string expected) {
  std::lock_guard<std::mutex> lock(mu_);
  expected_ = std::move(expected);
}

int64_t CudaAllocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

int64_t CudaAllocator::driver_allocations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return driver_allocations_;
}

std::string CudaAllocator::OutOfMemory(size_t bytes, tensor::MemoryCategory category,
                                       const std::string& why) const {
  const tensor::MemoryStats s = Stats();
  std::string in_use;
  for (int i = 0; i < tensor::kNumMemoryCategories; ++i) {
    if (s.current[i] == 0) continue;
    absl::StrAppend(&in_use, in_use.empty() ? "" : ", ",
                    tensor::MemoryCategoryName(static_cast<tensor::MemoryCategory>(i)), " ",
                    Megabytes(s.current[i]));
  }
  return absl::StrCat(
      "out of memory on cuda:", device_, ": allocating ", Megabytes(bytes), " of ",
      tensor::MemoryCategoryName(category), " exceeds ", why, "; in use ",
      Megabytes(s.total_current()), " (", in_use.empty() ? "nothing" : in_use, "), cached ",
      Megabytes(cached_),
      expected_.empty() ? "" : absl::StrCat("; `dstrain estimate` predicted ", expected_));
}

}  // namespace dstrain::device
