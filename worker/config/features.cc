#include "worker/config/features.h"

#include <iterator>

namespace dstrain::config::internal {
namespace {

// The highest ZeRO stage the engine runs (docs/architecture.md, "ZeRO"); all four have landed.
constexpr int kImplementedMaxZeroStage = 3;

// One row per gated key of keys.cc. Flip `implemented` when the engine supports the feature.
constexpr FeatureSwitch kSwitches[] = {
    // Parallelism.
    {"job.pipeline_stages", "pipeline parallelism (job.pipeline_stages > 1)", true},
    // Checkpoints (docs/checkpoints.md).
    {"job.checkpoint_every", "periodic checkpoints (job.checkpoint_every > 0)", true},
    {"seq_parallel_communication_data_type", "sequence parallelism", false},
    {"tensor_parallel", "tensor parallelism", false},
    {"use_data_before_expert_parallelism", "mixture-of-experts parallelism", false},
    // Mixed precision.
    {"fp16.enabled", "fp16 mixed precision", true},
    {"fp16.fp16_master_weights_and_grads", "fp16 master weights and gradients", false},
    {"bf16.enabled", "bf16 mixed precision", true},
    {"bf16.immediate_grad_update", "bf16 immediate gradient update", false},
    {"amp.enabled", "NVIDIA apex AMP", false},
    {"communication_data_type", "gradient communication in a dtype other than fp32", true},
    // Gradient reduction.
    {"prescale_gradients", "gradient prescaling", true},
    {"gradient_predivide_factor", "gradient predivision (gradient_predivide_factor != 1)", true},
    {"sparse_gradients", "sparse (CSR) gradient all-reduce", false},
    {"disable_allgather", "disable_allgather", false},
    // ZeRO extensions.
    {"zero_optimization.offload_optimizer.device", "optimizer offload", true},
    {"zero_optimization.offload_param.device", "parameter offload", true},
    {"zero_optimization.zero_hpz_partition_size", "ZeRO++ hierarchical partitioning (hpZ)", false},
    {"zero_optimization.zero_quantized_weights", "ZeRO++ quantized weights (qwZ)", false},
    {"zero_optimization.zero_quantized_nontrainable_weights",
     "ZeRO++ quantized non-trainable weights", false},
    {"zero_optimization.zero_quantized_gradients", "ZeRO++ quantized gradients (qgZ)", false},
    {"zero_optimization.zeropp_loco_param", "ZeRO++ LoCo", false},
    {"zero_optimization.mics_shard_size", "MiCS sharding", false},
    {"zero_optimization.mics_hierarchical_params_gather", "MiCS hierarchical gather", false},
    // Optimizer.
    {"optimizer.legacy_fusion", "legacy fusion", false},
    // Activation checkpointing.
    // Monitoring and debugging output.
    {"tensorboard.enabled", "TensorBoard monitoring", false},
    {"csv_monitor.enabled", "CSV monitoring", false},
    {"wandb.enabled", "Weights & Biases monitoring", false},
    {"comet.enabled", "Comet monitoring", false},
    {"flops_profiler.enabled", "the flops profiler", false},
    {"comms_logger.enabled", "the communication logger", false},
    {"wall_clock_breakdown", "wall-clock breakdown logging", false},
    {"memory_breakdown", "memory breakdown logging", false},
    {"dump_state", "dump_state", false},
    // Checkpoints.
    {"checkpoint.load_universal", "universal checkpoints", false},
    {"checkpoint.use_node_local_storage", "node-local checkpoint storage", false},
    {"checkpoint.parallel_write.pipeline_stage", "parallel checkpoint writes per pipeline stage",
     false},
    // Data and training-loop features DeepSpeed layers on top.
    {"dataloader_drop_last", "DeepSpeed's data loader (dstrain reads data.train itself)", false},
    {"data_efficiency.enabled", "data efficiency", false},
    {"data_efficiency.data_sampling.enabled", "data sampling / curriculum learning", false},
    {"data_efficiency.data_routing.enabled", "data routing (random-LTD)", false},
    {"curriculum_learning.enabled", "curriculum learning", false},
    {"progressive_layer_drop.enabled", "progressive layer drop", false},
    {"eigenvalue.enabled", "eigenvalue computation", false},
    {"elasticity.enabled", "elastic training", false},
    {"autotuning.enabled", "autotuning", false},
    {"hybrid_engine.enabled", "the hybrid (RLHF) engine", false},
    {"graph_harvesting", "graph harvesting", false},
    {"sparse_attention", "sparse attention", false},
    {"compression_training", "compression training", false},
    {"quantize_training.enabled", "quantization-aware training", false},
    {"weight_quantization", "weight quantization", false},
    {"nebula.enabled", "Nebula checkpointing", false},
};

}  // namespace

int ImplementedMaxZeroStage() { return kImplementedMaxZeroStage; }

const FeatureSwitch* FindFeatureSwitch(absl::string_view path) {
  for (const FeatureSwitch& s : kSwitches) {
    if (s.path == path) return &s;
  }
  return nullptr;
}

absl::Span<const FeatureSwitch> AllFeatureSwitches() {
  return absl::MakeConstSpan(kSwitches, std::size(kSwitches));
}

}  // namespace dstrain::config::internal
