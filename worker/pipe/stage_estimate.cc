#include "worker/pipe/stage_estimate.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_macros.h"
#include "worker/model/param_layout.h"
#include "worker/pipe/schedule.h"
#include "worker/zero/precision.h"

namespace dstrain::pipe {
model::ActivationPlan StagePlan(const config::JobSpec& spec, int buffers) {
  model::ActivationPlan plan;
  plan.buffers = buffers;
  plan.checkpoint_interval = spec.pipeline.activation_checkpoint_interval;
  plan.synchronize = spec.pipeline.synchronize_checkpoint_boundary;
  plan.profile = spec.pipeline.profile_checkpoints;
  return plan;
}

absl::StatusOr<std::vector<StageEstimate>> EstimateStages(const config::JobSpec& spec,
                                                          const device::Sizing& ops) {
  const model::GptConfig shape = config::ModelShape(spec.model);
  const int S = spec.pipeline.stages;
  const int M = static_cast<int>(spec.gradient_accumulation_steps);
  const int B = static_cast<int>(spec.train_micro_batch_size_per_gpu);
  const int T = spec.data.seq_len;
  std::vector<StagePartition> cut;
  if (S > 1) {
    DT_ASSIGN_OR_RETURN(cut, PartitionLayers(shape, S, spec.pipeline.partition_method));
  } else {
    DT_ASSIGN_OR_RETURN(const model::ParamLayout whole, model::ParamLayout::ForGpt(shape));
    cut.push_back({model::BlockRange{}, shape.n_layer, whole.num_parameters()});
  }
  const DType matmul = zero::StatePrecision::Of(spec).Matmul();
  std::vector<StageEstimate> out;
  for (int s = 0; s < S; ++s) {
    StageEstimate e;
    e.stage = s;
    e.partition = cut[s];
    e.buffers = S > 1 ? TrainBuffers(S, M, s) : 1;
    const model::BlockRange range = cut[s].blocks;
    DT_ASSIGN_OR_RETURN(const model::ParamLayout layout, model::ParamLayout::ForGpt(shape, range));
    e.memory = zero::EstimateMemory(
        layout, shape, spec.zero, spec.zero.stage, spec.data_parallel_size, B, T, ops,
        zero::StatePrecision::Of(spec), range, StagePlan(spec, e.buffers));
    e.activations_plain = zero::GptActivationBytes(shape, B, T, ops, range,
                                                   model::ActivationPlan{e.buffers, 0}, matmul);
    e.checkpoint_interval = spec.pipeline.activation_checkpoint_interval;
    if (e.checkpoint_interval > 0) {
      e.activations_checkpointed = zero::GptActivationBytes(
          shape, B, T, ops, range, model::ActivationPlan{e.buffers, e.checkpoint_interval}, matmul);
    } else {
      // The job checkpoints nothing: show the interval that would keep the least.
      e.activations_checkpointed = std::numeric_limits<int64_t>::max();
      for (int k = 1; k <= range.Count(shape.n_layer); ++k) {
        const int64_t bytes = zero::GptActivationBytes(shape, B, T, ops, range,
                                                       model::ActivationPlan{e.buffers, k}, matmul);
        if (bytes < e.activations_checkpointed) {
          e.activations_checkpointed = bytes;
          e.checkpoint_interval = k;
        }
      }
    }
    out.push_back(e);
  }
  return out;
}

std::string DescribeStages(const std::vector<StageEstimate>& stages, const config::JobSpec& spec) {
  const int n_layer = spec.model.n_layer;
  const int k = spec.pipeline.activation_checkpoint_interval;
  std::string out;
  if (stages.size() > 1) {
    absl::StrAppend(
        &out, absl::StrFormat("pipeline: %d stages x %d data-parallel rank(s), partition \"%s\", "
                              "ZeRO stage %d; per-rank memory in MB\n",
                              stages.size(), spec.data_parallel_size,
                              spec.pipeline.partition_method, spec.zero.stage));
  }
  absl::StrAppend(
      &out, absl::StrFormat("%-6s %-8s %10s %10s %8s %12s %12s %20s %10s\n", "stage", "blocks",
                            "params(M)", "model st.", "in fl.", "activations", "no checkpts",
                            k > 0 ? "(job: every k)" : "checkpointed (best k)", "total"));
  for (const StageEstimate& e : stages) {
    const zero::MemoryEstimate& m = e.memory;
    const double total =
        m.model_states() + m.activations + m.comm_buffers_peak + m.gathered_params_peak;
    absl::StrAppend(
        &out, absl::StrFormat(
                  "%-6d %-8s %10.2f %10.2f %8d %12.2f %12.2f %14.2f (k=%d) %10.2f\n", e.stage,
                  absl::StrCat(e.partition.blocks.first, "-", e.partition.blocks.End(n_layer) - 1),
                  e.partition.parameters / 1e6, m.model_states() / 1e6, e.buffers,
                  m.activations / 1e6, e.activations_plain / 1e6, e.activations_checkpointed / 1e6,
                  e.checkpoint_interval, total / 1e6));
  }
  absl::StrAppend(&out,
                  k > 0 ? absl::StrFormat("activations: checkpointing every %d block(s), as the "
                                          "job says (pipeline.activation_checkpoint_interval)\n",
                                          k)
                        : "activations: no checkpointing (set pipeline.activation_checkpoint_"
                          "interval to k to keep one block output per k blocks)\n");
  return out;
}

nlohmann::json StagesToJson(const std::vector<StageEstimate>& stages, int n_layer) {
  nlohmann::json out = nlohmann::json::array();
  for (const StageEstimate& e : stages) {
    const zero::MemoryEstimate& m = e.memory;
    out.push_back({{"stage", e.stage},
                   {"blocks", {e.partition.blocks.first, e.partition.blocks.End(n_layer)}},
                   {"parameters", e.partition.parameters},
                   {"micro_batches_in_flight", e.buffers},
                   {"params_bytes", m.params},
                   {"grads_bytes", m.grads},
                   {"optimizer_state_bytes", m.optimizer_state},
                   {"optimizer_state_nvme_bytes", m.nvme_bytes},
                   {"activations_bytes", m.activations},
                   {"activations_without_checkpointing_bytes", e.activations_plain},
                   {"checkpoint_interval", e.checkpoint_interval},
                   {"activations_checkpointed_bytes", e.activations_checkpointed},
                   {"comm_buffers_peak_bytes", m.comm_buffers_peak},
                   {"gathered_params_peak_bytes", m.gathered_params_peak}});
  }
  return out;
}

}  // namespace dstrain::pipe
