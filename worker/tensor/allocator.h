// Per-device memory allocation with byte accounting by category.
//
// Every buffer the trainer owns (parameters, gradients, optimizer state, activations,
// communication buffers) is allocated through an Allocator and tagged with a MemoryCategory. The
// allocator keeps current and peak bytes per category; this is how ZeRO's memory claims are
// measured and exported in the metrics. Thread-safe: counters are atomics.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/types/dtype.h"

namespace dstrain::tensor {

enum class MemoryCategory : int {
  kParams = 0,
  kGrads,
  kOptimizerState,
  kActivations,
  kCommBuffers,
  kGatheredParams,  // ZeRO-3: whole modules gathered for the time they run (and prefetched)
  kOther,
};
inline constexpr int kNumMemoryCategories = 7;

// Stable lower-case name used in metrics and logs ("params", "grads", "optimizer_state", ...).
absl::string_view MemoryCategoryName(MemoryCategory c);

struct MemoryStats {
  std::array<int64_t, kNumMemoryCategories> current{};
  std::array<int64_t, kNumMemoryCategories> peak{};
  int64_t total_peak = 0;  // peak of the sum, not the sum of peaks
  int64_t total_current() const;
  // {"params": n, ...} of current bytes, as a compact JSON object.
  std::string CurrentJson() const;
  // The same for the peaks.
  std::string PeakJson() const;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // Returns `bytes` of memory aligned to at least 64 bytes, or kResourceExhausted when the
  // device (or the configured limit) cannot supply it. Zero bytes returns a non-null pointer.
  virtual absl::StatusOr<void*> Allocate(size_t bytes, MemoryCategory category) = 0;
  // REQUIRES: p came from Allocate on this allocator with the same bytes and category.
  // Device memory may still be in use by work queued on the device's compute stream (or on a
  // stream ordered before it): an allocator of such a device reuses it only for work ordered after
  // that (a caching allocator on the compute stream does so by construction).
  virtual void Free(void* p, size_t bytes, MemoryCategory category) = 0;
  // Sets `bytes` bytes at p (memory of this allocator) to zero before returning.
  virtual void Zero(void* p, size_t bytes) = 0;
  // The device whose memory this allocator hands out.
  virtual Device device() const = 0;

  MemoryStats Stats() const;
  // Counts `delta` bytes of `category` handed out by an allocator layered on this one from memory
  // of this device that it manages itself (ArenaAllocator), so these statistics stay the whole
  // device's.
  void AccountFor(MemoryCategory category, int64_t delta) { Account(category, delta); }
  // Sets every peak to the current value (start of a measured interval).
  void ResetPeaks();

 protected:
  Allocator() = default;
  void Account(MemoryCategory category, int64_t delta);

 private:
  std::array<std::atomic<int64_t>, kNumMemoryCategories> current_{};
  std::array<std::atomic<int64_t>, kNumMemoryCategories> peak_{};
  std::atomic<int64_t> total_current_{0};
  std::atomic<int64_t> total_peak_{0};
};

// Cache colouring of large host blocks (CpuAllocator, ArenaAllocator; allocator.cc says why): a
// block of kColorMinBytes or more takes kColoredExtraBytes more, and the k-th such block of an
// allocator starts at ColoredStart(region, k), `region` being where its extent begins.
inline constexpr size_t kColorMinBytes = size_t{256} << 10;
inline constexpr size_t kColoredExtraBytes = 64 + (size_t{16} << 10);
// Past one 64-byte line (which the allocator may use to find the extent again) at the address
// ≡ (k mod 8) · 2112 modulo 16 KiB. REQUIRES: region 64-byte aligned.
char* ColoredStart(char* region, size_t k);

// Host memory, 64-byte aligned (a cache line; also enough for AVX-512 loads). An optional limit
// (bytes, 0 = none) makes allocations beyond it fail, for tests of memory budgets.
//
// Blocks of 256 KiB or more are cache-coloured: the k-th such block of the process starts at
// the address ≡ (k mod 8) · 2112 modulo 16 KiB (ColorOffset), so that arrays streamed side by
// side do not share cache sets and memory banks (allocator.cc says what that costs otherwise).
class CpuAllocator final : public Allocator {
 public:
  explicit CpuAllocator(int64_t limit_bytes = 0) : limit_bytes_(limit_bytes) {}
  // The address of p modulo 16 KiB: (k mod 8) · 2112 for the k-th block of 256 KiB or more.
  static size_t ColorOffset(const void* p);
  absl::StatusOr<void*> Allocate(size_t bytes, MemoryCategory category) override;
  void Free(void* p, size_t bytes, MemoryCategory category) override;
  void Zero(void* p, size_t bytes) override;
  Device device() const override { return Device::Cpu(); }

 private:
  const int64_t limit_bytes_;
};

}  // namespace dstrain::tensor
