#include "worker/tensor/allocator.h"

#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dstrain::tensor {

absl::string_view MemoryCategoryName(MemoryCategory c) {
  switch (c) {
    case MemoryCategory::kParams:
      return "params";
    case MemoryCategory::kGrads:
      return "grads";
    case MemoryCategory::kOptimizerState:
      return "optimizer_state";
    case MemoryCategory::kActivations:
      return "activations";
    case MemoryCategory::kCommBuffers:
      return "comm_buffers";
    case MemoryCategory::kGatheredParams:
      return "gathered_params";
    case MemoryCategory::kOther:
      return "other";
  }
  return "unknown";
}

int64_t MemoryStats::total_current() const {
  int64_t t = 0;
  for (int64_t c : current) t += c;
  return t;
}

namespace {
std::string CategoryJson(const std::array<int64_t, kNumMemoryCategories>& bytes) {
  std::string out = "{";
  for (int i = 0; i < kNumMemoryCategories; ++i) {
    absl::StrAppend(&out, i ? "," : "", "\"", MemoryCategoryName(static_cast<MemoryCategory>(i)),
                    "\":", bytes[i]);
  }
  absl::StrAppend(&out, "}");
  return out;
}
}  // namespace

std::string MemoryStats::CurrentJson() const { return CategoryJson(current); }
std::string MemoryStats::PeakJson() const { return CategoryJson(peak); }

MemoryStats Allocator::Stats() const {
  MemoryStats s;
  for (int i = 0; i < kNumMemoryCategories; ++i) {
    s.current[i] = current_[i].load(std::memory_order_relaxed);
    s.peak[i] = peak_[i].load(std::memory_order_relaxed);
  }
  s.total_peak = total_peak_.load(std::memory_order_relaxed);
  return s;
}

void Allocator::ResetPeaks() {
  for (int i = 0; i < kNumMemoryCategories; ++i) {
    peak_[i].store(current_[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
  }
  total_peak_.store(total_current_.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

namespace {
void RaiseTo(std::atomic<int64_t>& peak, int64_t value) {
  int64_t old = peak.load(std::memory_order_relaxed);
  while (value > old && !peak.compare_exchange_weak(old, value, std::memory_order_relaxed)) {
  }
}
}  // namespace

void Allocator::Account(MemoryCategory category, int64_t delta) {
  const int i = static_cast<int>(category);
  const int64_t now = current_[i].fetch_add(delta, std::memory_order_relaxed) + delta;
  const int64_t total = total_current_.fetch_add(delta, std::memory_order_relaxed) + delta;
  if (delta > 0) {
    RaiseTo(peak_[i], now);
    RaiseTo(total_peak_, total);
  }
}

absl::StatusOr<void*> CpuAllocator::Allocate(size_t bytes, MemoryCategory category) {
  if (limit_bytes_ > 0 && Stats().total_current() + static_cast<int64_t>(bytes) > limit_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat("CPU allocator limit of ", limit_bytes_,
                                                     " bytes exceeded allocating ", bytes,
                                                     " bytes of ", MemoryCategoryName(category)));
  }
  constexpr size_t kAlign = 64;
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("out of host memory allocating ", bytes,
                                                     " bytes of ", MemoryCategoryName(category)));
  }
  Account(category, static_cast<int64_t>(bytes));
  return p;
}

void CpuAllocator::Free(void* p, size_t bytes, MemoryCategory category) {
  if (p == nullptr) return;
  std::free(p);
  Account(category, -static_cast<int64_t>(bytes));
}

void CpuAllocator::Zero(void* p, size_t bytes) {
  if (bytes > 0) std::memset(p, 0, bytes);
}

}  // namespace dstrain::tensor
