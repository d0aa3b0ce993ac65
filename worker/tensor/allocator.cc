#include "worker/tensor/allocator.h"

#include <atomic>
#include <cstdint>
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

namespace {

constexpr size_t kAlign = 64;
// Arrays that kernels stream side by side (AdamW's parameters, gradients and two moments) would
// otherwise often start at the same offset modulo large powers of two: equal sizes consecutive in
// the heap (common/runtime/process_init.h keeps blocks below 1 GiB there), or page-aligned from
// mmap. Their elements then share cache sets and memory banks: AdamW's update pattern ran at
// 1.7-2 GB/s with its four arrays 256 MiB apart, against 29-43 GB/s with them 256 B-16 KiB off
// (2 Zen 3 cores; docs/architecture.md, "Host memory"). So block k of kColorMinBytes or more
// starts at the address ≡ (k mod kColors) · kColorStep modulo kColorPeriod (ColoredStart): any
// kColors consecutive large blocks lie at least 2 KiB apart modulo 16 KiB.
constexpr size_t kColorStep = 33 * kAlign;  // 2112 bytes: 2 KiB and a line
constexpr size_t kColors = 8;
constexpr size_t kColorPeriod = size_t{16} << 10;
static_assert((kColors - 1) * kColorStep < kColorPeriod);
static_assert(kColoredExtraBytes == kAlign + kColorPeriod);

// The CpuAllocators' colours: one sequence for the process (they share its heap).
std::atomic<size_t> next_color{0};

}  // namespace

char* ColoredStart(char* region, size_t k) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(region) + kAlign;
  const uintptr_t want = k % kColors * kColorStep;  // both multiples of kAlign
  return reinterpret_cast<char*>(first +
                                 (want + kColorPeriod - first % kColorPeriod) % kColorPeriod);
}

size_t CpuAllocator::ColorOffset(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kColorPeriod;
}

absl::StatusOr<void*> CpuAllocator::Allocate(size_t bytes, MemoryCategory category) {
  if (limit_bytes_ > 0 && Stats().total_current() + static_cast<int64_t>(bytes) > limit_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat("CPU allocator limit of ", limit_bytes_,
                                                     " bytes exceeded allocating ", bytes,
                                                     " bytes of ", MemoryCategoryName(category)));
  }
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  const bool colored = bytes >= kColorMinBytes;
  const size_t extra = colored ? kColoredExtraBytes : 0;
  void* block = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded + extra);
  if (block == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("out of host memory allocating ", bytes,
                                                     " bytes of ", MemoryCategoryName(category)));
  }
  void* p = block;
  if (colored) {
    p = ColoredStart(static_cast<char*>(block), next_color.fetch_add(1, std::memory_order_relaxed));
    // The block's own start, in the line below the payload.
    std::memcpy(static_cast<char*>(p) - sizeof(void*), &block, sizeof(void*));
  }
  Account(category, static_cast<int64_t>(bytes));
  return p;
}

void CpuAllocator::Free(void* p, size_t bytes, MemoryCategory category) {
  if (p == nullptr) return;
  void* block = p;
  if (bytes >= kColorMinBytes) {
    std::memcpy(&block, static_cast<char*>(p) - sizeof(void*), sizeof(void*));
  }
  std::free(block);
  Account(category, -static_cast<int64_t>(bytes));
}

void CpuAllocator::Zero(void* p, size_t bytes) {
  if (bytes > 0) std::memset(p, 0, bytes);
}

}  // namespace dstrain::tensor
