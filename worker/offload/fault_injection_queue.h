// FaultInjectionQueue: an IoQueue that passes requests to a real one except where a FaultPlan
// says otherwise — a transfer cut short (the kernel's partial read or write, which the swap
// engine must finish), or an error (EIO, ENOSPC, ...) instead of the transfer. Tests of the NVMe
// swap path use it through SwapEngine::Options::make_queue (docs/offload.md, "Failures").
#pragma once

#include <cerrno>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "worker/offload/io_queue.h"

namespace dstrain::offload {

struct IoFault {
  enum class Kind { kShort, kError };
  Kind kind = Kind::kError;
  bool write = false;      // the direction it hits
  int64_t min_offset = 0;  // the first request at or past this file offset
  int error = EIO;         // kError: the -errno the completion carries
  int times = 1;           // how many requests it hits
};

// The faults to inject, shared by every queue of an engine. Thread-safe.
class FaultPlan {
 public:
  void Add(IoFault fault);
  // The fault a request meets (counted), if any.
  bool Match(const IoRequest& r, IoFault* hit);
  int injected() const;

 private:
  mutable std::mutex mu_;
  std::vector<IoFault> faults_;
  int injected_ = 0;
};

class FaultInjectionQueue final : public IoQueue {
 public:
  FaultInjectionQueue(std::unique_ptr<IoQueue> base, std::shared_ptr<FaultPlan> plan)
      : base_(std::move(base)), plan_(std::move(plan)) {}
  int depth() const override { return base_->depth(); }
  const char* name() const override { return base_->name(); }
  void Prepare(const IoRequest& request) override;
  absl::Status Submit() override;
  absl::StatusOr<std::vector<IoCompletion>> Reap() override;

 private:
  std::unique_ptr<IoQueue> base_;
  std::shared_ptr<FaultPlan> plan_;
  std::deque<IoCompletion> failed_;  // completions made up for requests that met an error
  int base_in_flight_ = 0;
  int base_prepared_ = 0;
};

}  // namespace dstrain::offload
