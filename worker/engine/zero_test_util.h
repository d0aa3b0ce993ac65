// Helpers for tests that train the engine on several data-parallel ranks in one process (ranks
// as threads over a FakeCommunicator).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/config/config.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/engine/engine.h"
#include "worker/model/param_layout.h"

namespace dstrain::engine::testing {

// A CPU device for tests: its allocator (whose statistics the memory tests read) and its Ops.
struct CpuDevice {
  tensor::CpuAllocator alloc;
  device::CpuOps ops{&alloc};
  tensor::MemoryStats Stats() const { return alloc.Stats(); }
  void ResetPeaks() { alloc.ResetPeaks(); }
};

// A small GPT job (2 layers, C 24, vocabulary 37: no module size divides by any world size),
// micro-batch 2 x 8 tokens, AdamW lr 1e-2 with weight decay. `zero_extra` adds keys to
// zero_optimization, `top_extra` top-level blocks (e.g. `, "bf16": {"enabled": true}`).
config::JobSpec SmallGptSpec(int world, int stage, int gas, double clip,
                             const std::string& zero_extra = "", int steps = 20,
                             const std::string& top_extra = "");
model::GptConfig ModelShape(const config::JobSpec& spec);

// Micro-batch `micro` of rank `rank` at step `step`: sequences that follow a rule the model can
// learn (each token is the previous plus 5, mod vocab) from pseudo-random starts; the same for
// every stage. Returns inputs and targets, micro_batch x seq_len each.
std::pair<std::vector<int32_t>, std::vector<int32_t>> Batch(const config::JobSpec& spec, int step,
                                                            int rank, int micro);

// Steps [first, last) of `spec` on `engine` as data-parallel rank `rank`: each step's
// gradient_accumulation_steps micro-batches of Batch, forward, backward and Step. Returns the loss
// of each step taken; the first error stops it.
absl::StatusOr<std::vector<double>> TrainSteps(Engine& engine, const config::JobSpec& spec,
                                               int rank, int first, int last);
// The same after loading `*load` (a SaveState of this rank) when it is given, saving the state
// after the last step into `*save` when that is given.
absl::StatusOr<std::vector<double>> ResumeTrainSave(Engine& engine, const config::JobSpec& spec,
                                                    int rank, int first, int last,
                                                    const std::string* load, std::string* save);

// <TEST_TMPDIR>/<name> (/tmp outside Bazel), created: an nvme_path for offload tests. A failure
// to make it fails the test.
std::string TestDir(const std::string& name);

// Runs fn(rank, communicator) on `world` threads sharing one FakeWorld, and joins them.
void RunOnRanks(int world, const std::function<void(int rank, comm::Communicator* dp)>& fn);

// What a training run gives for comparing runs: rank 0's per-step losses and final weights.
struct TrainRun {
  std::vector<float> losses;
  std::vector<float> weights;
};

// `run` (a ZeRO stage 1-3 run) against `base` (stage 0) with gradient accumulation and
// clipping, which round their sums in another order (stages 2-3 average each micro-batch's
// gradients before summing them; the norm is summed per partition; zero_parity_test.cc): the
// weights within 1e-4 relative L2 and 1e-3 absolute, each step's loss within 1e-6 relative.
void ExpectWithinZeroParityBounds(const TrainRun& run, const TrainRun& base,
                                  const std::string& what);

}  // namespace dstrain::engine::testing
