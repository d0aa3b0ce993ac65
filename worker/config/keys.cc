#include "worker/config/keys.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

namespace dstrain::config::internal {
namespace {

using nlohmann::json;

// Fields stored in a C++ int must fit one.
constexpr double kIntMax = std::numeric_limits<int32_t>::max();

std::shared_ptr<const Block> MakeBlock(std::vector<Field> fields, bool open = false) {
  auto b = std::make_shared<Block>();
  b->fields = std::move(fields);
  b->open = open;
  return b;
}

Field NullBool(std::string name) { return Bool(std::move(name), false).DefaultNull(); }

// DeepSpeed's enable-style blocks whose contents we do not interpret: only `enabled` is known,
// the rest is kept verbatim (the feature is rejected when enabled, so it never takes effect).
std::shared_ptr<const Block> EnabledOnlyBlock() {
  return MakeBlock({Bool("enabled", false).Gated()}, /*open=*/true);
}

// A string used as "not fp32" switch: null (None) and "fp32" are what dstrain does anyway.
bool NotFp32(const json& v) { return !v.is_null() && v != json("fp32"); }

// offload_param / offload_optimizer (DeepSpeed's zero/offload_config.py). device "none" is
// DeepSpeed's code default (its docs say "cpu"); any other device needs the offload engine.
std::shared_ptr<const Block> OffloadParamBlock() {
  return MakeBlock({
      Str("device", "none", {"none", "cpu", "nvme"}).Gated(),
      NullStr("nvme_path"),
      Int("buffer_count", 5).Min(0),
      Int("buffer_size", 100000000).Min(0),
      Int("max_in_cpu", 1000000000).Min(0),
      Bool("pin_memory", false),
  });
}

std::shared_ptr<const Block> OffloadOptimizerBlock() {
  return MakeBlock({
      Str("device", "none", {"none", "cpu", "nvme"}).Gated(),
      NullStr("nvme_path"),
      Int("buffer_count", 4).Min(0),
      Bool("pin_memory", false),
      Bool("pipeline_read", false),
      Bool("pipeline_write", false),
      Bool("fast_init", false),
      Num("ratio", 1.0).Min(0).Max(1),
  });
}

// zero_optimization (DeepSpeed's zero/config.py; docs/configuration.md, "ZeRO"). DeepSpeed's
// pydantic model forbids extra keys too. The stage-3 keys are pydantic fields named without the
// "stage3_" prefix and aliased with it; we print the prefixed spelling, which is what configs in
// the wild use, and accept both.
std::shared_ptr<const Block> ZeroBlock() {
  return MakeBlock({
      Int("stage", 0).Min(0).Max(3),
      Bool("contiguous_gradients", true),
      Bool("reduce_scatter", true),
      Int("reduce_bucket_size", 500000000).Min(0),
      Int("allgather_bucket_size", 500000000).Min(0),
      Bool("allgather_partitions", true),
      NullBool("overlap_comm"),  // None: resolved in config_zero.cc (true for stage 3, else false)
      Bool("load_from_fp32_weights", true),
      Bool("elastic_checkpoint", false),
      NullObj("offload_param", OffloadParamBlock()),
      NullObj("offload_optimizer", OffloadOptimizerBlock()),
      Int("sub_group_size", 1000000000).Min(1),
      // Deprecated spellings, migrated by DeepSpeed with a warning.
      NullBool("cpu_offload"),        // true is migrated before normalisation (config.cc)
      NullBool("cpu_offload_param"),  // true is migrated before normalisation (config.cc)
      NullBool("cpu_offload_use_pin_memory"),
      NullBool("stage3_gather_fp16_weights_on_model_save"),
      Int("stage3_prefetch_bucket_size", 50000000).Min(0).Alias("prefetch_bucket_size"),
      Int("stage3_param_persistence_threshold", 100000).Min(0).Alias("param_persistence_threshold"),
      Int("stage3_model_persistence_threshold", std::numeric_limits<int64_t>::max())
          .Min(0)
          .Alias("model_persistence_threshold"),
      Int("stage3_max_live_parameters", 1000000000).Min(0).Alias("max_live_parameters"),
      Int("stage3_max_reuse_distance", 1000000000).Min(0).Alias("max_reuse_distance"),
      Bool("stage3_gather_16bit_weights_on_model_save", false)
          .Alias("gather_16bit_weights_on_model_save"),
      Int("stage3_module_granularity_threshold", 0).Min(0).Alias("module_granularity_threshold"),
      Bool("stage3_use_all_reduce_for_fetch_params", false)
          .Alias("use_all_reduce_for_fetch_params"),
      Bool("ignore_unused_parameters", true),
      Bool("legacy_stage1", false),
      Bool("round_robin_gradients", false),
      Int("zero_hpz_partition_size", 1).Min(1).Gated(),
      Bool("zero_quantized_weights", false).Gated(),
      Bool("zero_quantized_nontrainable_weights", false).Gated(),
      Bool("zero_quantized_gradients", false).Gated(),
      Any("zeropp_loco_param").Gated(),
      Int("mics_shard_size", -1).Gated(),
      Bool("mics_hierarchical_params_gather", false).Gated(),
      Bool("memory_efficient_linear", true),
      Bool("pipeline_loading_checkpoint", false),
      Bool("override_module_apply", true),
      Bool("use_multi_rank_bucket_allreduce", true),
      Bool("log_trace_cache_warnings", false),
  });
}

// fp16 (docs/configuration.md, "The dynamic loss scaler (fp16)"). The dynamic-loss-scale keys
// matter even at their default values: DeepSpeed forwards them to the ZeRO loss scaler only when at
// least one is present (see config.h, Fp16Config).
std::shared_ptr<const Block> Fp16Block() {
  return MakeBlock({
      Bool("enabled", false).Gated(),
      Bool("auto_cast", false),
      Num("loss_scale", 0.0).Min(0),
      Int("initial_scale_power", 16).Min(0).Max(1023),
      Int("loss_scale_window", 1000).Min(1),
      Int("hysteresis", 2).Min(1),
      Bool("consecutive_hysteresis", false),
      Num("min_loss_scale", 1.0).Min(0),
      Bool("fp16_master_weights_and_grads", false).Gated(),
  });
}

std::shared_ptr<const Block> Bf16Block() {
  return MakeBlock({
      Bool("enabled", false).Gated(),
      Bool("immediate_grad_update", false).Gated(),
  });
}

// pipeline (DeepSpeed's get_pipeline_config). `stages` is "auto" or an integer; config_batch.cc
// checks it against job.pipeline_stages.
std::shared_ptr<const Block> PipelineBlock() {
  Field stages = Any("stages");
  stages.default_value = "auto";
  stages.nullable = false;
  return MakeBlock({
      stages,
      Str("partition", "best"),
      Bool("seed_layers", false),
      Int("activation_checkpoint_interval", 0).Min(0),
      Bool("pipe_partitioned", true),
      Bool("grad_partitioned", true),
  });
}

// Monitors: tensorboard and csv_monitor share one shape.
std::shared_ptr<const Block> TensorboardLikeBlock() {
  return MakeBlock({
      Bool("enabled", false).Gated(),
      Str("output_path", ""),
      Str("job_name", "DeepSpeedJobName"),
  });
}

std::shared_ptr<const Block> WandbBlock() {
  return MakeBlock({
      Bool("enabled", false).Gated(),
      NullStr("group"),
      NullStr("team"),
      Str("project", "deepspeed"),
  });
}

std::shared_ptr<const Block> CometBlock() {
  return MakeBlock({
      Bool("enabled", false).Gated(),
      Int("samples_log_interval", 100).Min(1),
      NullStr("project"),
      NullStr("workspace"),
      NullStr("api_key"),
      NullStr("experiment_name"),
      NullStr("experiment_key"),
      NullBool("online"),
      NullStr("mode"),
  });
}

std::shared_ptr<const Block> FlopsProfilerBlock() {
  return MakeBlock({
      Bool("enabled", false).Gated(),
      Num("recompute_fwd_factor", 0.0),
      Int("profile_step", 1),
      Int("module_depth", -1),
      Int("top_modules", 1),
      Bool("detailed", true),
      NullStr("output_file"),
  });
}

std::shared_ptr<const Block> CommsLoggerBlock() {
  return MakeBlock({
      Bool("enabled", false).Gated(),
      Bool("verbose", false),
      Bool("prof_all", true),
      Bool("debug", false),
      List("prof_ops", ValueType::kString, json::array()),
  });
}

std::shared_ptr<const Block> TimersBlock() {
  return MakeBlock({
      Obj("throughput", MakeBlock({Bool("enabled", true), Bool("synchronized", true)})),
  });
}

// activation_checkpointing. The block has no `enabled`: pipeline.activation_checkpoint_interval
// turns checkpointing on, and this block tunes it.
std::shared_ptr<const Block> ActivationCheckpointingBlock() {
  return MakeBlock({
      Bool("partition_activations", false),
      Bool("cpu_checkpointing", false),
      Bool("contiguous_memory_optimization", false),
      NullInt("number_checkpoints").Min(1),
      Bool("synchronize_checkpoint_boundary", false),
      Bool("profile", false),
  });
}

// checkpoint (DeepSpeed's own checkpoint options). DeepSpeed upper-cases tag_validation before
// comparing, so its value is checked case-insensitively in ResolveCheckpoint.
std::shared_ptr<const Block> CheckpointBlock() {
  return MakeBlock({
      Str("tag_validation", "Warn"),
      Bool("load_universal", false).Gated(),
      Bool("use_node_local_storage", false).Gated(),
      Obj("parallel_write", MakeBlock({Bool("pipeline_stage", false).Gated()})),
  });
}

// aio (DeepSpeed's asynchronous NVMe I/O). The docs call intra_op_parallelism "thread_count",
// which the code never reads.
std::shared_ptr<const Block> AioBlock() {
  return MakeBlock({
      Int("block_size", 1048576).Min(1),
      Int("queue_depth", 8).Min(1),
      Int("intra_op_parallelism", 1).Min(1).DocOnlyName("thread_count"),
      Bool("single_submit", false),
      Bool("overlap_events", true),
      Bool("use_gds", false),
  });
}

// elasticity.
std::shared_ptr<const Block> ElasticityBlock() {
  return MakeBlock({
      Bool("enabled", false).Gated(),
      Int("max_train_batch_size", 2000).Min(1),
      List("micro_batch_sizes", ValueType::kInt, json::array({2, 4, 6})),
      Int("min_gpus", 1).Min(1),
      Int("max_gpus", 10000).Min(1),
      Num("min_time", 0.0).Min(0),
      Bool("prefer_larger_batch", true).DocOnlyName("prefer_large_batch"),
      Bool("ignore_non_elastic_batch_info", false),
      Num("version", 0.2),
      Int("num_gpus_per_node", 1).Min(1),
      Int("model_parallel_size", 1).Min(1),
  });
}

std::shared_ptr<const Block> AutotuningBlock() {
  return MakeBlock({
      Bool("enabled", false).Gated(),
      Str("results_dir", "autotuning_results"),
      Str("exps_dir", "autotuning_exps"),
      Bool("overwrite", true),
      Str("metric", "throughput", {"latency", "throughput", "flops"}),
      Int("start_profile_step", 3).Min(0),
      Int("end_profile_step", 5).Min(0),
      Bool("fast", true),
      NullInt("max_train_batch_size").Min(1),
      Int("min_train_batch_size", 1).Min(1),
      Int("max_train_micro_batch_size_per_gpu", 1024).Min(1),
      Int("min_train_micro_batch_size_per_gpu", 1).Min(1),
      Int("num_tuning_micro_batch_sizes", 3).Min(1),
      Str("tuner_type", "gridsearch", {"gridsearch", "random", "model_based"}),
      Int("tuner_early_stopping", 5).Min(0),
      Int("tuner_num_trials", 50).Min(1),
      Int("mp_size", 1).Min(1),
      Any("arg_mappings"),
      Any("model_info"),
      NullStr("model_info_path"),
  });
}

std::shared_ptr<const Block> DataEfficiencyBlock() {
  // The sampling and routing sub-blocks carry many nested options (curriculum metrics,
  // random-LTD layer lists); only their switches are interpreted.
  return MakeBlock({
      Bool("enabled", false).Gated(),
      Int("seed", 1234),
      Obj("data_sampling",
          MakeBlock({Bool("enabled", false).Gated(), Int("num_epochs", 1000).Min(1),
                     Int("num_workers", 0).Min(0), Any("curriculum_learning")},
                    /*open=*/true)),
      Obj("data_routing",
          MakeBlock({Bool("enabled", false).Gated(), Any("random_ltd")}, /*open=*/true)),
  });
}

std::shared_ptr<const Block> ProgressiveLayerDropBlock() {
  return MakeBlock({
      Bool("enabled", false).Gated(),
      Num("theta", 1.0),
      Num("gamma", 0.001),
  });
}

std::shared_ptr<const Block> EigenvalueBlock() {
  return MakeBlock({
      Bool("enabled", false).Gated(),
      Bool("verbose", false),
      Int("max_iter", 100).Min(1),
      Num("tol", 1e-2),
      Num("stability", 1e-6),
      Int("gas_boundary_resolution", 1).Min(1),
      Str("layer_name", "bert.encoder.layer"),
      Int("layer_num", 0).Min(0),
  });
}

std::shared_ptr<const Block> HybridEngineBlock() {
  return MakeBlock({
      Bool("enabled", false).Gated(),
      Int("max_out_tokens", 512).Min(1),
      Int("inference_tp_size", 1).Min(1),
      Bool("release_inference_cache", false),
      Bool("pin_parameters", true),
      Int("tp_gather_partition_size", 8).Min(1),
  });
}

// `type` and `params` are interpreted by config_optimizer.cc, which picks the params table by type.
std::shared_ptr<const Block> OptimizerBlock() {
  return MakeBlock({
      Str("type", "").Required(),
      Any("params"),
      Bool("legacy_fusion", false).Gated(),
  });
}

std::shared_ptr<const Block> SchedulerBlock() {
  return MakeBlock({
      Str("type", "").Required(),
      Any("params"),
  });
}

// dstrain's own blocks (docs/job-file.md).
std::shared_ptr<const Block> ModelBlock() {
  return MakeBlock({
      Str("type", "gpt", {"gpt", "llama"}),
      Int("n_layer", 0).Required().Min(1).Max(kIntMax),
      Int("n_head", 0).Required().Min(1).Max(kIntMax),
      Int("n_embd", 0).Required().Min(1).Max(kIntMax),
      Int("vocab_size", 0).Required().Min(1).Max(kIntMax),
      Int("block_size", 0).Required().Min(1).Max(kIntMax),
      NullInt("padded_vocab_size").Min(1).Max(kIntMax),
      // The Llama family's (type "llama" only; config_job_blocks.cc).
      NullInt("n_kv_head").Min(1).Max(kIntMax),
      NullInt("intermediate_size").Min(1).Max(kIntMax),
      NullNum("rope_theta").Min(1),
      NullNum("norm_eps").Min(0),
      Int("init_seed", 1337).Min(0),
      Str("init_from", ""),
  });
}

std::shared_ptr<const Block> DataBlock() {
  return MakeBlock({
      Str("train", "").Required(),
      Str("val", ""),
      NullInt("seq_len").Min(1).Max(kIntMax),
      Int("seed", 1337).Min(0),
      Bool("shuffle", true),
  });
}

std::shared_ptr<const Block> JobBlock() {
  return MakeBlock({
      Str("name", ""),
      Int("world_size", 1).Min(1).Max(4096),
      Int("pipeline_stages", 1).Min(1).Max(4096).Gated(),
      Int("train_steps", 0).Required().Min(1),
      Str("checkpoint_dir", ""),
      Int("checkpoint_every", 0).Min(0).Gated(),
      Int("keep_last", 3).Min(1).Max(kIntMax),
      Int("max_restarts", 0).Min(0).Max(kIntMax),
      Num("comm_timeout", 300).Min(0.1).Max(86400),
      Bool("resume", true),
      Int("eval_every", 100).Min(0),
      Int("eval_batches", 20).Min(1).Max(kIntMax),
      Int("sample_every", 0).Min(0),
      Int("sample_tokens", 0).Min(0).Max(kIntMax),
      Bool("skip_nonfinite_steps", false),
      Str("device", "auto"),
  });
}

Block BuildJobFileSchema() {
  Block b;
  b.fields = {
      // The batch triple (docs/job-file.md, "Batch size"): None unless given; config_batch.cc
      // infers the missing ones.
      NullInt("train_batch_size").Min(1),
      NullInt("train_micro_batch_size_per_gpu").Min(1),
      NullInt("gradient_accumulation_steps").Min(1),
      // Optimizer and LR schedule (docs/configuration.md).
      NullObj("optimizer", OptimizerBlock()),
      NullObj("scheduler", SchedulerBlock()),
      Bool("zero_allow_untested_optimizer", false),
      Bool("zero_force_ds_cpu_optimizer", true),
      // Mixed precision (docs/configuration.md, "Mixed precision").
      Obj("fp16", Fp16Block()),
      Obj("bf16", Bf16Block()).Alias("bfloat16"),
      Obj("amp", EnabledOnlyBlock()),  // other keys go to apex.amp.initialize
      // None: the engine's default (config.h, JobSpec::grad_accum_dtype).
      Obj("data_types", MakeBlock({NullStr("grad_accum_dtype", {"fp32", "fp16", "bf16"})})),
      // Gradient clipping and averaging (docs/configuration.md). gradient_clipping's code default
      // is 0 (the docs say 1.0).
      Num("gradient_clipping", 0.0).Min(0),
      NullStr("communication_data_type", {"fp32", "fp16", "bf16"}).GatedWhen(NotFp32),
      Str("seq_parallel_communication_data_type", "fp32", {"fp32", "fp16", "bf16"})
          .GatedWhen(NotFp32),
      Bool("prescale_gradients", false).Gated(),
      Num("gradient_predivide_factor", 1.0).Min(0).Gated(),
      Bool("sparse_gradients", false).Gated(),
      Bool("disable_allgather", false).Gated(),
      // ZeRO (a boolean `zero_optimization` is rewritten to {"stage": 0|1} before this).
      Obj("zero_optimization", ZeroBlock()),
      Obj("activation_checkpointing", ActivationCheckpointingBlock()),
      Obj("aio", AioBlock()),
      Obj("pipeline", PipelineBlock()),
      // Monitoring and profiling.
      Obj("tensorboard", TensorboardLikeBlock()),
      Obj("csv_monitor", TensorboardLikeBlock()),
      Obj("wandb", WandbBlock()),
      Obj("comet", CometBlock()),
      Obj("flops_profiler", FlopsProfilerBlock()),
      Obj("comms_logger", CommsLoggerBlock()),
      Obj("timers", TimersBlock()),
      Bool("wall_clock_breakdown", false).Gated(),
      Bool("memory_breakdown", false).Gated(),
      Bool("dump_state", false).Gated(),
      NullInt("steps_per_print").Min(1),  // code default None (docs: 10)
      // Checkpoint options.
      Obj("checkpoint", CheckpointBlock()),
      // Elasticity, autotuning and the other features DeepSpeed layers on the training loop.
      Obj("elasticity", ElasticityBlock()),
      Obj("autotuning", AutotuningBlock()),
      Obj("data_efficiency", DataEfficiencyBlock()),
      Obj("curriculum_learning", EnabledOnlyBlock()),
      Obj("progressive_layer_drop", ProgressiveLayerDropBlock()),
      Obj("eigenvalue", EigenvalueBlock()),
      Obj("hybrid_engine", HybridEngineBlock()),
      Obj("quantize_training", EnabledOnlyBlock()),
      Obj("nebula", EnabledOnlyBlock()),
      Any("sparse_attention").Gated(),
      Any("compression_training").Gated(),
      Any("weight_quantization").Gated(),
      Any("tensor_parallel").Gated(),
      Bool("dataloader_drop_last", false).Gated(),
      Bool("graph_harvesting", false).Gated(),
      Bool("use_data_before_expert_parallelism", false).Gated(),
      NullInt("vocabulary_size").Min(1),  // DeepSpeed only warns about it; no effect
      // dstrain's blocks. `notes` is written by `dstrain validate`; on input it only carries the
      // notes of keys without effect over (config.h, JobSpec::no_effect_notes).
      Obj("model", ModelBlock()).Required(),
      Obj("data", DataBlock()).Required(),
      Obj("job", JobBlock()).Required(),
      List("notes", ValueType::kString, json::array()),
  };
  return b;
}

Block BuildAdamParams() {
  Block b;
  b.fields = {
      Num("lr", 1e-3).Min(0),
      List("betas", ValueType::kNumber, json::array({0.9, 0.999})),
      Num("eps", 1e-8),
      Num("weight_decay", 0.0).Min(0),
      Bool("bias_correction", true),
      Bool("adam_w_mode", true),
      Bool("torch_adam", false),
      Bool("amsgrad", false),
      NullNum("max_grad_norm").Min(0),
  };
  return b;
}

// LR schedules (DeepSpeed's lr_schedules.py; docs/configuration.md, "Learning-rate schedules").
// Warmup steps are >= 0 because DeepSpeed uses max(2, n).
std::vector<Field> WarmupLrFields() {
  return {
      Num("warmup_min_lr", 0.0).Min(0),
      Num("warmup_max_lr", 0.001).Min(0),
      Int("warmup_num_steps", 1000).Min(0),
      Str("warmup_type", "log", {"log", "linear"}),
  };
}

Block BuildWarmupLr() { return Block{WarmupLrFields(), false}; }

Block BuildWarmupDecayLr() {
  std::vector<Field> f = WarmupLrFields();
  f.insert(f.begin(), Int("total_num_steps", 0).Required().Min(1));
  return Block{std::move(f), false};
}

Block BuildWarmupCosineLr() {
  return Block{{
                   Int("total_num_steps", 0).Required().Min(1),
                   Num("warmup_min_ratio", 0.0).Min(0).Max(1),
                   Int("warmup_num_steps", 1000).Min(0),
                   Num("cos_min_ratio", 0.0001).Min(0).Max(1),
                   Str("warmup_type", "log", {"log", "linear"}),
               },
               false};
}

Block BuildOneCycle() {
  return Block{{
                   Num("cycle_min_lr", 0.0).Required().Min(0),
                   Num("cycle_max_lr", 0.0).Required().Min(0),
                   Num("decay_lr_rate", 0.0).Min(0),
                   Int("cycle_first_step_size", 2000).Min(1),
                   NullInt("cycle_second_step_size").Min(1),
                   Int("cycle_first_stair_count", 0).Min(0),
                   NullInt("cycle_second_stair_count").Min(0),
                   Int("decay_step_size", 0).Min(0),
                   Bool("cycle_momentum", true),
                   Num("cycle_min_mom", 0.8).Min(0).Max(1),
                   Num("cycle_max_mom", 0.9).Min(0).Max(1),
                   Num("decay_mom_rate", 0.0).Min(0),
               },
               false};
}

Block BuildLrRangeTest() {
  return Block{{
                   Num("lr_range_test_min_lr", 1e-3).Min(0),
                   Int("lr_range_test_step_size", 2000).Min(1),
                   Num("lr_range_test_step_rate", 1.0).Min(0),
                   Bool("lr_range_test_staircase", false),
               },
               false};
}

}  // namespace

const Block& JobFileSchema() {
  static const Block* const kSchema = new Block(BuildJobFileSchema());
  return *kSchema;
}

const Block& DeepSpeedConfigSchema() {
  static const Block* const kSchema = [] {
    Block b = BuildJobFileSchema();
    b.fields.erase(std::remove_if(b.fields.begin(), b.fields.end(),
                                  [](const Field& f) {
                                    return f.name == "model" || f.name == "data" || f.name == "job";
                                  }),
                   b.fields.end());
    return new Block(std::move(b));
  }();
  return *kSchema;
}

const Block& JobBlockSchema() {
  static const Block* const kSchema = new Block(*JobBlock());
  return *kSchema;
}

const Block& AdamParamsSchema() {
  static const Block* const kSchema = new Block(BuildAdamParams());
  return *kSchema;
}

const std::vector<std::string>& SchedulerTypes() {
  static const auto* const kNames = new std::vector<std::string>{
      "WarmupLR", "WarmupDecayLR", "WarmupCosineLR", "OneCycle", "LRRangeTest"};
  return *kNames;
}

const Block* SchedulerParamsSchema(absl::string_view type) {
  static const Block* const kWarmupLr = new Block(BuildWarmupLr());
  static const Block* const kWarmupDecayLr = new Block(BuildWarmupDecayLr());
  static const Block* const kWarmupCosineLr = new Block(BuildWarmupCosineLr());
  static const Block* const kOneCycle = new Block(BuildOneCycle());
  static const Block* const kLrRangeTest = new Block(BuildLrRangeTest());
  if (type == "WarmupLR") return kWarmupLr;
  if (type == "WarmupDecayLR") return kWarmupDecayLr;
  if (type == "WarmupCosineLR") return kWarmupCosineLr;
  if (type == "OneCycle") return kOneCycle;
  if (type == "LRRangeTest") return kLrRangeTest;
  return nullptr;
}

bool IsJobKey(absl::string_view key) {
  return key == "model" || key == "data" || key == "job" || key == "notes" ||
         key == "deepspeed_config";
}

bool IsDeprecatedZeroKey(absl::string_view key) {
  return key == "cpu_offload" || key == "cpu_offload_param" ||
         key == "cpu_offload_use_pin_memory" || key == "stage3_gather_fp16_weights_on_model_save";
}

}  // namespace dstrain::config::internal
