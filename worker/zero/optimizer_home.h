// OptimizerHome: where an offloaded optimizer's state lives when it is not in the rank's device
// buffers (docs/offload.md): in swap files on NVMe (OptimizerSwap, optimizer_swap.h) or in host
// memory beside a GPU (HostOptimizerState, below). Either way the state is the arrays a rank's
// optimizer keeps for its owned elements — fp32 master weights under mixed precision, then Adam's
// m and v — cut into the update's windows (partition.h, CutUpdateWindows), and reached only
// through host memory: Update hands each window's arrays to the update in turn, the ranges move
// the state in and out between steps. ZeroState holds one where zero_optimization.
// offload_optimizer.device is not "none" (on a CPU rank only "nvme": its memory is host memory).
// Not thread-safe; one ZeroState drives it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/config/config.h"
#include "worker/tensor/allocator.h"

namespace dstrain::zero {

class OptimizerHome {
 public:
  virtual ~OptimizerHome() = default;

  // For each window in order: its arrays in host memory (arrays[a] holds windows()[w] floats);
  // what `fn` leaves there is the window's new state.
  using WindowFn = std::function<absl::Status(int w, float* const* arrays)>;
  virtual absl::Status Update(const WindowFn& fn) = 0;

  // Between steps: floats [at, at + n) of array `a` in the owned space, out of or into host
  // memory. kInternal for a range outside the state.
  virtual absl::Status ReadRange(int a, int64_t at, int64_t n, float* dst) = 0;
  virtual absl::Status WriteRange(int a, int64_t at, int64_t n, const float* src) = 0;
  // The next elements of array `a` from `at` (at most `max_n`, at least one) in memory this home
  // keeps, valid until the next call: how a checkpoint streams the state out without a copy.
  virtual absl::StatusOr<absl::Span<const float>> ReadChunk(int a, int64_t at, int64_t max_n) = 0;
  // Every array zero.
  virtual absl::Status Zero() = 0;

  virtual config::OffloadDevice device() const = 0;
  virtual const std::vector<int64_t>& windows() const = 0;
  // Seconds the last Update waited for its I/O (what the computation did not hide).
  virtual double last_wait_seconds() const { return 0; }
};

// The state in host memory from `host` (kOptimizerState), for a GPU rank's
// offload_optimizer.device "cpu" (ZeRO-Offload): `arrays` arrays of the owned elements, each
// whole, so Update and ReadChunk hand out the memory itself.
class HostOptimizerState final : public OptimizerHome {
 public:
  static absl::StatusOr<std::unique_ptr<HostOptimizerState>> Create(std::vector<int64_t> windows,
                                                                    int arrays,
                                                                    tensor::Allocator* host);
  ~HostOptimizerState() override;

  absl::Status Update(const WindowFn& fn) override;
  absl::Status ReadRange(int a, int64_t at, int64_t n, float* dst) override;
  absl::Status WriteRange(int a, int64_t at, int64_t n, const float* src) override;
  absl::StatusOr<absl::Span<const float>> ReadChunk(int a, int64_t at, int64_t max_n) override;
  absl::Status Zero() override;
  config::OffloadDevice device() const override { return config::OffloadDevice::kCpu; }
  const std::vector<int64_t>& windows() const override { return windows_; }

 private:
  HostOptimizerState(std::vector<int64_t> windows, tensor::Allocator* host)
      : windows_(std::move(windows)), host_(host) {}
  absl::Status CheckRange(int a, int64_t at, int64_t n) const;

  const std::vector<int64_t> windows_;
  tensor::Allocator* const host_;
  int64_t total_ = 0;
  std::vector<float*> arrays_;
};

}  // namespace dstrain::zero
