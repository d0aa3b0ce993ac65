// Per-rank memory of a job for each ZeRO stage, before it runs (`dstrain estimate`), computed
// from the same partition the engine uses, so the model-state figures are exact, not formulas:
// they include the 64-byte alignment of every parameter and the padding of every rank's chunk.
// DeepSpeed's estimate_zero{2,3}_model_states_mem_needs gives formulas; the ZeRO paper's
// (fp32 Adam: 16 bytes per parameter; stage 1: 8 + 8/N; stage 2: 4 + 12/N; stage 3: 16/N) come
// along for comparison, and for mixed precision (2-byte parameters and gradients, fp32 master
// weights and moments: K = 12): 16, 4 + 12/N, 2 + 14/N, 16/N.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/config/config.h"
#include "worker/device/ops.h"
#include "worker/model/gpt_sizes.h"
#include "worker/model/param_layout.h"
#include "worker/tensor/tensor.h"
#include "worker/zero/precision.h"

namespace dstrain::zero {

struct MemoryEstimate {
  int stage = 0;
  int world = 1;
  // Exactly what the allocator holds after the first step, per category.
  int64_t params = 0, grads = 0, optimizer_state = 0;
  // The forward's and backward's activations (exact) under the activation plan: its
  // micro-batches in flight, its checkpointing.
  int64_t activations = 0;
  // Upper bounds of the transient buffers: stage 2/3 gradient buckets, stage 3 gathered modules.
  int64_t comm_buffers_peak = 0, gathered_params_peak = 0;
  // zero_optimization.offload_optimizer.device. Under "nvme" optimizer_state is what stays in
  // memory (the swap's buffers) and nvme_bytes the swap file; "cpu" on a CPU rank changes nothing
  // (the state is in host memory already).
  // On a GPU rank (offload "cpu" or "nvme"), optimizer_state is what stays on the device (the
  // sub-groups a partial offload keeps there) and host_bytes the host memory the offload holds:
  // the state or the swap's buffers, two sub-groups' staging (stages 2-3: the parameters' only,
  // beside the streamed gradients). Under offload_param "cpu" (stage 3, a GPU rank) params is 0
  // and host_bytes holds the parameter partition too.
  config::OffloadDevice offload = config::OffloadDevice::kNone;
  int64_t nvme_bytes = 0;
  int64_t host_bytes = 0;
  // The ZeRO paper's model-state bytes at this stage, world size and precision.
  double paper_model_states = 0;
  bool mixed = false;
  int64_t model_states() const { return params + grads + optimizer_state; }
};

// Activation bytes of the GPT (or a slice of it) for a micro-batch of B x T tokens on `ops`'s
// device, from the size table the model allocates by (model/gpt_sizes.h); device-sized rows
// (the attention's saved state and scratch) as `ops` sizes them now (the CPU's scratch depends on
// the thread count, set as the trainer sets it), with the matrix products on `matmul` operands
// (StatePrecision::Matmul: bf16 products keep their inputs in bf16 where `ops` takes them).
int64_t GptActivationBytes(const model::GptConfig& config, int B, int T, const device::Sizing& ops,
                           model::BlockRange range = {}, const model::ActivationPlan& plan = {},
                           DType matmul = DType::kF32);

// The estimate for stage `stage` at `world` data-parallel ranks with the job's dtypes
// `precision`, on `ops`'s device, for `layout` (a pipeline stage's: the model of blocks `range`)
// with its activations held as `plan` says.
MemoryEstimate EstimateMemory(const model::ParamLayout& layout, const model::GptConfig& model,
                              const config::ZeroConfig& zero, int stage, int world, int B, int T,
                              const device::Sizing& ops, const StatePrecision& precision = {},
                              model::BlockRange range = {}, const model::ActivationPlan& plan = {});

// The same for any model (a module's layout, no tied embedding), its activation bytes given.
MemoryEstimate EstimateMemory(const model::ParamLayout& layout, int64_t activations,
                              const config::ZeroConfig& zero, int stage, int world,
                              const device::Sizing& ops, const StatePrecision& precision = {});

// A table of every stage for the job, as `dstrain estimate` prints it.
std::string DescribeEstimates(const std::vector<MemoryEstimate>& estimates, int64_t num_parameters);

}  // namespace dstrain::zero
