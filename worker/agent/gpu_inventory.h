// The GPUs a worker agent offers as GPU slots (docs/service.md, "GPU slots"): what the CUDA
// runtime finds, limited by --gpus, or a fake inventory for tests (--fake-gpus).
//
// Discovery runs in a child process with a deadline (DiscoverGpus): a machine without a GPU or a
// driver, a driver that crashes or hangs, all end as "no GPUs" with a reason, never as a crashed
// or stuck agent. It also keeps the agent itself free of CUDA: only its trainers use the GPUs.
// Builds without CUDA (--config=nocuda) find no GPUs.
//
// GPU i of the inventory is slot i of the worker. A trainer placed on it sees that GPU alone:
// CUDA_VISIBLE_DEVICES is its visible id, the agent's own CUDA_VISIBLE_DEVICES entry for it when
// the agent runs under one (so the agent's view and the trainer's agree), else its index.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/worker.pb.h"

namespace dstrain::agent {

// --gpus: auto (every GPU found), none (a CPU-only worker: no discovery at all), or N (at most
// the first N found).
struct GpuSelection {
  enum class Mode { kAuto, kNone, kAtMost };
  Mode mode = Mode::kAuto;
  int at_most = 0;  // kAtMost
};

// "auto", "none" or an integer N >= 0 (0 is "none"); INVALID_ARGUMENT naming --gpus otherwise.
absl::StatusOr<GpuSelection> ParseGpuSelection(absl::string_view flag);

// --fake-gpus "NAME:BYTES,NAME:BYTES" (for tests): one GPU per entry, indices in order, uuid
// "FAKE-GPU-<i>". NAME is everything before the last ':' (non-empty), BYTES an integer >= 0.
// INVALID_ARGUMENT naming --fake-gpus and the entry otherwise.
absl::StatusOr<std::vector<v1::GpuInfo>> ParseFakeGpus(absl::string_view flag);

// Finds the GPUs: index (0..n-1), name, memory_bytes and uuid of each.
using GpuProbe = std::function<absl::StatusOr<std::vector<v1::GpuInfo>>()>;

// The CUDA runtime's view (cudaGetDeviceCount, cudaGetDeviceProperties). An error when it has
// none to offer for a reason worth telling: no driver, a driver older than the runtime, a build
// without CUDA.
absl::StatusOr<std::vector<v1::GpuInfo>> ProbeCudaRuntime();

// Runs `probe` in a child process and returns what it found. UNAVAILABLE when the child does not
// answer within `timeout` (it is killed), dies or cannot be started; the probe's own error
// otherwise. Fork-safe only while the caller has a single thread: call it before starting any.
absl::StatusOr<std::vector<v1::GpuInfo>> DiscoverGpus(const GpuProbe& probe,
                                                      absl::Duration timeout);

// One GPU slot: the GPU, and what the trainer placed on it gets as CUDA_VISIBLE_DEVICES.
struct GpuSlot {
  v1::GpuInfo info;
  std::string visible_id;
};

// `gpus` (indices 0..n-1) with their visible ids under the agent's CUDA_VISIBLE_DEVICES
// (`agent_visible`, nullptr when unset): entry i of that list for GPU i, else "i".
std::vector<GpuSlot> ToGpuSlots(std::vector<v1::GpuInfo> gpus, const char* agent_visible);

// What --gpus and --fake-gpus select: the fake inventory when there is one, else what `probe`
// finds through DiscoverGpus (not run for --gpus none); at most N of them for --gpus N. Never an
// error: a failed discovery is no GPUs, and *note says why (always set: a line for the agent's
// log).
std::vector<v1::GpuInfo> SelectGpus(const GpuSelection& selection,
                                    const std::optional<std::vector<v1::GpuInfo>>& fake,
                                    const GpuProbe& probe, absl::Duration timeout,
                                    std::string* note);

}  // namespace dstrain::agent
