#include "worker/config/key_effects.h"

#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/config/features.h"

namespace dstrain::config::internal {
namespace {

constexpr KeyEffectRow Acts(const char* path, const char* code) {
  return {path, KeyEffect::kActs, code};
}
constexpr KeyEffectRow NoEffect(const char* path, const char* why) {
  return {path, KeyEffect::kNoEffect, why};
}
// A setting of the unsupported feature `gated_switch` turns on.
constexpr KeyEffectRow Configures(const char* path, const char* gated_switch) {
  return {path, KeyEffect::kNoEffect, nullptr, gated_switch};
}
// A gated key: features.cc names the feature and rejects it when on.
constexpr KeyEffectRow NotSupported(const char* path) {
  return {path, KeyEffect::kNotSupported, nullptr};
}
// A key rejected when on by a check of its own (named by `rejected_by`).
constexpr KeyEffectRow RejectedBy(const char* path, const char* rejected_by) {
  return {path, KeyEffect::kNotSupported, rejected_by};
}

// Reasons shared by several keys.
constexpr char kOffloadPin[] =
    "zero::ZeroState::Allocate: on a GPU rank the host state and staging are page-locked "
    "(device::PinnedHostAllocator) and the copies overlap the host's update; on a CPU rank, whose "
    "state is in host memory already, a note says it changes nothing";
constexpr char kOffloadRatio[] =
    "zero::ZeroState::Allocate: on a GPU rank the first int((1 - ratio) * n) of the n sub-groups "
    "keep their state on the device and are updated there, the rest go to the host (at every "
    "stage from 1; DeepSpeed reads it at stage 3); device \"nvme\" refuses ratio < 1; on a CPU "
    "rank, whose state is in host memory already, a note says it changes nothing";
constexpr char kParamNvme[] =
    "zero::ParamSwap (worker/zero/param_swap.h) with offload_param.device \"nvme\"; with "
    "device \"cpu\" DeepSpeed does not read it either";
constexpr char kTimers[] =
    "it configures DeepSpeed's throughput timer; dstrain times every step itself and reports "
    "milliseconds and tokens per second in its progress lines and metrics";
constexpr char kLossScaler[] = "LossScalerOptions::FromConfig (worker/precision/loss_scaler.cc)";
constexpr char kAdam[] = "Engine::Step's AdamW update (worker/engine/engine.cc)";
constexpr char kSchedule[] = "LrSchedule (worker/engine/lr_schedule.cc)";
constexpr char kLlamaKey[] =
    "the Llama decoder's shape (worker/model/llama, built by worker/trainer/job_model.cc); refused "
    "with model.type \"gpt\"";
constexpr char kStage3[] = "ZeroConfig, read by stage 3's gathers (worker/zero)";

// One row per key path of keys.cc, in its order.
constexpr KeyEffectRow kRows[] = {
    // The batch triple (docs/job-file.md, "Batch size").
    Acts("train_batch_size", "config_batch.cc infers the micro-batch or the accumulation steps"),
    Acts("train_micro_batch_size_per_gpu", "Engine::Forward and the trainer's data loader"),
    Acts("gradient_accumulation_steps", "Engine: the loss divisor and the step boundary"),
    // Optimizer and schedule.
    Acts("optimizer.type", "config_optimizer.cc: Adam or AdamW (adam_w_mode's rule)"),
    Acts("optimizer.params", "config_optimizer.cc, with the table of optimizer.params.*"),
    Acts("optimizer.params.lr", kAdam),
    Acts("optimizer.params.betas", kAdam),
    Acts("optimizer.params.eps", kAdam),
    Acts("optimizer.params.weight_decay", kAdam),
    Acts("optimizer.params.bias_correction", kAdam),
    Acts("optimizer.params.adam_w_mode", kAdam),
    NoEffect("optimizer.params.torch_adam",
             "it picks torch.optim's Adam over DeepSpeed's fused kernel; dstrain has one Adam "
             "kernel, and it computes the same update"),
    RejectedBy("optimizer.params.amsgrad", "config_optimizer.cc, as DeepSpeed's FusedAdam"),
    NoEffect("optimizer.params.max_grad_norm",
             "the optimizer never reads it; the top-level gradient_clipping key clips gradients"),
    NotSupported("optimizer.legacy_fusion"),
    Acts("scheduler.type", kSchedule),
    Acts("scheduler.params", "config_optimizer.cc, with the table of the scheduler's type"),
    Acts("scheduler.params.total_num_steps", kSchedule),
    Acts("scheduler.params.warmup_min_lr", kSchedule),
    Acts("scheduler.params.warmup_max_lr", kSchedule),
    Acts("scheduler.params.warmup_num_steps", kSchedule),
    Acts("scheduler.params.warmup_type", kSchedule),
    Acts("scheduler.params.warmup_min_ratio", kSchedule),
    Acts("scheduler.params.cos_min_ratio", kSchedule),
    Acts("scheduler.params.cycle_min_lr", kSchedule),
    Acts("scheduler.params.cycle_max_lr", kSchedule),
    Acts("scheduler.params.decay_lr_rate", kSchedule),
    Acts("scheduler.params.cycle_first_step_size", kSchedule),
    Acts("scheduler.params.cycle_second_step_size", kSchedule),
    Acts("scheduler.params.cycle_first_stair_count", kSchedule),
    Acts("scheduler.params.cycle_second_stair_count", kSchedule),
    Acts("scheduler.params.decay_step_size", kSchedule),
    Acts("scheduler.params.cycle_momentum", kSchedule),
    Acts("scheduler.params.cycle_min_mom", kSchedule),
    Acts("scheduler.params.cycle_max_mom", kSchedule),
    Acts("scheduler.params.decay_mom_rate", kSchedule),
    Acts("scheduler.params.lr_range_test_min_lr", kSchedule),
    Acts("scheduler.params.lr_range_test_step_size", kSchedule),
    Acts("scheduler.params.lr_range_test_step_rate", kSchedule),
    Acts("scheduler.params.lr_range_test_staircase", kSchedule),
    NoEffect("zero_allow_untested_optimizer",
             "it lets ZeRO run an optimizer DeepSpeed has not tested with it; dstrain runs only "
             "its own Adam and AdamW, which every ZeRO stage supports"),
    NoEffect("zero_force_ds_cpu_optimizer",
             "it makes DeepSpeed insist on its CPU Adam for an offloaded optimizer; dstrain has "
             "one Adam, which runs offloaded updates too"),
    // Mixed precision.
    Acts("fp16.enabled", "Engine::Initialize: fp16 storage and the dynamic loss scaler"),
    NoEffect("fp16.auto_cast",
             "it casts the model's floating-point inputs to fp16; dstrain's model takes token ids "
             "and runs each layer in the training precision already"),
    Acts("fp16.loss_scale", kLossScaler),
    Acts("fp16.initial_scale_power", kLossScaler),
    Acts("fp16.loss_scale_window", kLossScaler),
    Acts("fp16.hysteresis", kLossScaler),
    Acts("fp16.consecutive_hysteresis", kLossScaler),
    Acts("fp16.min_loss_scale", kLossScaler),
    NotSupported("fp16.fp16_master_weights_and_grads"),
    Acts("bf16.enabled", "Engine::Initialize: bf16 storage and bf16 matrix products"),
    NotSupported("bf16.immediate_grad_update"),
    NotSupported("amp.enabled"),
    Configures("amp.*", "amp.enabled"),
    Acts("data_types.grad_accum_dtype", "JobSpec::grad_accum_dtype, the engine's accumulation"),
    // Gradient clipping and reduction.
    Acts("gradient_clipping", "Engine::Step: the clip factor of the global norm"),
    Acts("communication_data_type", "Engine::Initialize: zero::GradientReduction::dtype"),
    NotSupported("seq_parallel_communication_data_type"),
    Acts("prescale_gradients", "Engine::Initialize: zero::GradientReduction::prescale"),
    Acts("gradient_predivide_factor", "Engine::Initialize: zero::GradientReduction::predivide"),
    NotSupported("sparse_gradients"),
    NotSupported("disable_allgather"),
    // ZeRO.
    Acts("zero_optimization.stage", "zero::ZeroState::Create picks the stage"),
    NoEffect("zero_optimization.contiguous_gradients",
             "dstrain's gradients always live in one flat buffer in the parameters' layout, so "
             "there is nothing to copy into a contiguous one"),
    Acts("zero_optimization.reduce_scatter", "ZeroConfig::reduce_scatter (worker/zero)"),
    Acts("zero_optimization.reduce_bucket_size", "zero::Partition::ForStage: the buckets"),
    Acts("zero_optimization.allgather_bucket_size",
         "ZeroConfig::allgather_bucket_size (worker/zero)"),
    Acts("zero_optimization.allgather_partitions",
         "ZeroConfig::allgather_partitions (worker/zero)"),
    Acts("zero_optimization.overlap_comm", "zero's gradient buckets and the memory estimate"),
    NoEffect("zero_optimization.load_from_fp32_weights",
             "dstrain's checkpoints always hold and restore the fp32 master weights "
             "(docs/checkpoints.md)"),
    NoEffect("zero_optimization.elastic_checkpoint",
             "dstrain's checkpoints load at any world size and ZeRO stage anyway "
             "(docs/checkpoints.md)"),
    Acts("zero_optimization.offload_param.device",
         "zero::ZeroState::Allocate: \"cpu\" keeps a GPU rank's stage-3 parameter partition in "
         "host memory, copied to the device for each gather and updated in place (a note on a "
         "CPU rank, whose memory is host memory); \"nvme\" keeps it in a swap file read "
         "chunk by chunk for each gather (zero::ParamSwap); stages 0-2 refuse it"),
    Acts("zero_optimization.offload_param.nvme_path", kParamNvme),
    Acts("zero_optimization.offload_param.buffer_count", kParamNvme),
    Acts("zero_optimization.offload_param.buffer_size", kParamNvme),
    NoEffect("zero_optimization.offload_param.max_in_cpu",
             "with parameters on NVMe the host keeps offload_param.buffer_count chunks of them "
             "(each at most buffer_size elements) and nothing more, so there is no other cap to "
             "set"),
    Acts("zero_optimization.offload_param.pin_memory",
         "zero::ZeroState::Allocate: the host memory of the offload (parameters and, with "
         "offload_optimizer, its state) is page-locked where either block's pin_memory says so"),
    Acts("zero_optimization.offload_optimizer.device",
         "zero::OptimizerSwap (NVMe) or the host-resident state (worker/zero, docs/offload.md)"),
    Acts("zero_optimization.offload_optimizer.nvme_path",
         "offload::PrepareSwapDir: the job's and rank's swap files under it"),
    Acts("zero_optimization.offload_optimizer.buffer_count",
         "zero::OptimizerSwap: the swap buffers in flight"),
    Acts("zero_optimization.offload_optimizer.pin_memory", kOffloadPin),
    Acts("zero_optimization.offload_optimizer.pipeline_read",
         "zero::OptimizerSwap: the next sub-group's read overlaps this update"),
    Acts("zero_optimization.offload_optimizer.pipeline_write",
         "zero::OptimizerSwap: a sub-group's write-back overlaps the next update"),
    Acts("zero_optimization.offload_optimizer.fast_init",
         "offload::SwapFile: unwritten extents (fallocate) instead of written zeros"),
    Acts("zero_optimization.offload_optimizer.ratio", kOffloadRatio),
    Acts("zero_optimization.sub_group_size", "ZeroConfig::sub_group_size (worker/zero)"),
    Acts("zero_optimization.cpu_offload",
         "config.cc MigrateCpuOffload: true is read as offload_optimizer {\"device\": \"cpu\"}"),
    Acts("zero_optimization.cpu_offload_param",
         "config.cc MigrateCpuOffloadParam: true is read as offload_param {\"device\": \"cpu\"}"),
    NoEffect("zero_optimization.cpu_offload_use_pin_memory",
             "it is read only beside cpu_offload: true (as offload_optimizer.pin_memory)"),
    Acts("zero_optimization.stage3_gather_fp16_weights_on_model_save",
         "config_zero.cc: read as stage3_gather_16bit_weights_on_model_save"),
    Acts("zero_optimization.stage3_prefetch_bucket_size", kStage3),
    Acts("zero_optimization.stage3_param_persistence_threshold", kStage3),
    Acts("zero_optimization.stage3_model_persistence_threshold", kStage3),
    Acts("zero_optimization.stage3_max_live_parameters", kStage3),
    Acts("zero_optimization.stage3_max_reuse_distance", kStage3),
    Acts("zero_optimization.stage3_gather_16bit_weights_on_model_save",
         "ZeroConfig::gather_16bit_weights_on_model_save: the 16-bit weights a checkpoint saves"),
    NoEffect("zero_optimization.stage3_module_granularity_threshold",
             "it groups small PyTorch modules for ZeRO-3's hooks; dstrain's stage 3 gathers "
             "whole model units and has no module hooks"),
    NoEffect("zero_optimization.stage3_use_all_reduce_for_fetch_params",
             "it swaps ZeRO-3's parameter all-gather for an all-reduce on some hardware; dstrain "
             "always fetches parameters with an all-gather"),
    NoEffect("zero_optimization.ignore_unused_parameters",
             "it lets ZeRO tolerate parameters that get no gradient; every parameter of dstrain's "
             "GPT gets one in every step"),
    NoEffect("zero_optimization.legacy_stage1",
             "it selects DeepSpeed's old stage-1 code; dstrain has one implementation per stage"),
    NoEffect("zero_optimization.round_robin_gradients",
             "it spreads CPU offload's device-to-host gradient copies over the ranks; dstrain "
             "copies each rank's own reduced gradients to the host sub-group by sub-group at the "
             "step boundary (docs/offload.md), with nothing to spread"),
    NotSupported("zero_optimization.zero_hpz_partition_size"),
    NotSupported("zero_optimization.zero_quantized_weights"),
    NotSupported("zero_optimization.zero_quantized_nontrainable_weights"),
    NotSupported("zero_optimization.zero_quantized_gradients"),
    NotSupported("zero_optimization.zeropp_loco_param"),
    NotSupported("zero_optimization.mics_shard_size"),
    NotSupported("zero_optimization.mics_hierarchical_params_gather"),
    NoEffect("zero_optimization.memory_efficient_linear",
             "it replaces PyTorch's linear function so that ZeRO-3 saves less for backward; "
             "dstrain's layers are its own and its stage 3 gathers the weights again for backward"),
    NoEffect("zero_optimization.pipeline_loading_checkpoint",
             "it loads a checkpoint into a pipeline-parallel ZeRO-3 model; dstrain's pipelines "
             "run ZeRO stages 0-1, and dstrain restores its checkpoints itself"),
    NoEffect("zero_optimization.override_module_apply",
             "it patches PyTorch's Module.apply for partitioned parameters; dstrain's model is not "
             "a PyTorch module"),
    NoEffect("zero_optimization.use_multi_rank_bucket_allreduce",
             "it changes how DeepSpeed groups its per-rank gradient reductions; dstrain reduces "
             "each bucket with one collective"),
    NoEffect("zero_optimization.log_trace_cache_warnings",
             "it switches on DeepSpeed's warnings about ZeRO-3's module trace cache; dstrain's "
             "stage 3 logs no such warnings"),
    // Activation checkpointing.
    // Activation checkpointing (pipeline.activation_checkpoint_interval turns it on).
    NoEffect("activation_checkpointing.partition_activations",
             "it splits the kept activations across tensor-parallel ranks; dstrain has no tensor "
             "parallelism, so each rank keeps its own"),
    NoEffect("activation_checkpointing.cpu_checkpointing",
             "on the CPU device the kept activations are in host memory already; a job on a CUDA "
             "device is refused (job.device cuda at validation, auto when its rank opens a GPU), "
             "since dstrain does not move activations to host memory yet"),
    NoEffect("activation_checkpointing.contiguous_memory_optimization",
             "dstrain always keeps the checkpointed activations in one buffer, allocated once per "
             "micro-batch shape"),
    NoEffect("activation_checkpointing.number_checkpoints",
             "it sizes DeepSpeed's contiguous checkpoint buffers; dstrain sizes its own from the "
             "model (one kept output per segment and micro-batch in flight)"),
    Acts("activation_checkpointing.synchronize_checkpoint_boundary",
         "ActivationPlan::synchronize: Gpt waits for the device at each segment boundary"),
    Acts("activation_checkpointing.profile",
         "ActivationPlan::profile: Gpt times the recomputation; the metrics line's recompute_s"),
    // Asynchronous I/O.
    Acts("aio.block_size", "offload::SwapEngine: bytes per request"),
    Acts("aio.queue_depth", "offload::SwapEngine: requests in flight per I/O thread"),
    Acts("aio.intra_op_parallelism", "offload::SwapEngine: I/O threads, one ring each"),
    Acts("aio.single_submit", "offload::SwapEngine: one request per submission"),
    Acts("aio.overlap_events", "offload::SwapEngine: submit while earlier requests complete"),
    RejectedBy("aio.use_gds", "config_offload.cc: GPUDirect Storage is refused"),
    // Pipeline parallelism (worker/pipe).
    Acts("pipeline.stages", "config_batch.cc checks it against job.pipeline_stages"),
    Acts("pipeline.partition", "PipelineConfig::partition_method, the stages' blocks"),
    NoEffect("pipeline.seed_layers",
             "it reseeds PyTorch's RNG per layer while a PipelineModule builds; dstrain "
             "initialises every layer from model.init_seed the same way at any partition"),
    Acts("pipeline.activation_checkpoint_interval",
         "PipelineConfig::activation_checkpoint_interval, the model's activation plan"),
    NoEffect("pipeline.pipe_partitioned",
             "it splits activations sent between stages across tensor-parallel ranks; dstrain "
             "has no tensor parallelism, so each stage sends its whole activation"),
    NoEffect("pipeline.grad_partitioned",
             "it splits gradients sent between stages across tensor-parallel ranks; dstrain "
             "has no tensor parallelism, so each stage sends its whole gradient"),
    // Monitoring and profiling.
    NotSupported("tensorboard.enabled"),
    Configures("tensorboard.output_path", "tensorboard.enabled"),
    Configures("tensorboard.job_name", "tensorboard.enabled"),
    NotSupported("csv_monitor.enabled"),
    Configures("csv_monitor.output_path", "csv_monitor.enabled"),
    Configures("csv_monitor.job_name", "csv_monitor.enabled"),
    NotSupported("wandb.enabled"),
    Configures("wandb.group", "wandb.enabled"),
    Configures("wandb.team", "wandb.enabled"),
    Configures("wandb.project", "wandb.enabled"),
    NotSupported("comet.enabled"),
    Configures("comet.samples_log_interval", "comet.enabled"),
    Configures("comet.project", "comet.enabled"),
    Configures("comet.workspace", "comet.enabled"),
    Configures("comet.api_key", "comet.enabled"),
    Configures("comet.experiment_name", "comet.enabled"),
    Configures("comet.experiment_key", "comet.enabled"),
    Configures("comet.online", "comet.enabled"),
    Configures("comet.mode", "comet.enabled"),
    NotSupported("flops_profiler.enabled"),
    Configures("flops_profiler.recompute_fwd_factor", "flops_profiler.enabled"),
    Configures("flops_profiler.profile_step", "flops_profiler.enabled"),
    Configures("flops_profiler.module_depth", "flops_profiler.enabled"),
    Configures("flops_profiler.top_modules", "flops_profiler.enabled"),
    Configures("flops_profiler.detailed", "flops_profiler.enabled"),
    Configures("flops_profiler.output_file", "flops_profiler.enabled"),
    NotSupported("comms_logger.enabled"),
    Configures("comms_logger.verbose", "comms_logger.enabled"),
    Configures("comms_logger.prof_all", "comms_logger.enabled"),
    Configures("comms_logger.debug", "comms_logger.enabled"),
    Configures("comms_logger.prof_ops", "comms_logger.enabled"),
    NoEffect("timers.throughput.enabled", kTimers),
    NoEffect("timers.throughput.synchronized", kTimers),
    NotSupported("wall_clock_breakdown"),
    NotSupported("memory_breakdown"),
    NotSupported("dump_state"),
    Acts("steps_per_print", "the trainer's progress lines (worker/trainer/training_run.cc)"),
    // Checkpoints.
    Acts("checkpoint.tag_validation", "the checkpoint code's check that all ranks save one tag"),
    NotSupported("checkpoint.load_universal"),
    NotSupported("checkpoint.use_node_local_storage"),
    NotSupported("checkpoint.parallel_write.pipeline_stage"),
    // Features DeepSpeed layers on the training loop.
    NotSupported("elasticity.enabled"),
    Configures("elasticity.max_train_batch_size", "elasticity.enabled"),
    Configures("elasticity.micro_batch_sizes", "elasticity.enabled"),
    Configures("elasticity.min_gpus", "elasticity.enabled"),
    Configures("elasticity.max_gpus", "elasticity.enabled"),
    Configures("elasticity.min_time", "elasticity.enabled"),
    Configures("elasticity.prefer_larger_batch", "elasticity.enabled"),
    Configures("elasticity.ignore_non_elastic_batch_info", "elasticity.enabled"),
    Configures("elasticity.version", "elasticity.enabled"),
    Configures("elasticity.num_gpus_per_node", "elasticity.enabled"),
    Configures("elasticity.model_parallel_size", "elasticity.enabled"),
    NotSupported("autotuning.enabled"),
    Configures("autotuning.results_dir", "autotuning.enabled"),
    Configures("autotuning.exps_dir", "autotuning.enabled"),
    Configures("autotuning.overwrite", "autotuning.enabled"),
    Configures("autotuning.metric", "autotuning.enabled"),
    Configures("autotuning.start_profile_step", "autotuning.enabled"),
    Configures("autotuning.end_profile_step", "autotuning.enabled"),
    Configures("autotuning.fast", "autotuning.enabled"),
    Configures("autotuning.max_train_batch_size", "autotuning.enabled"),
    Configures("autotuning.min_train_batch_size", "autotuning.enabled"),
    Configures("autotuning.max_train_micro_batch_size_per_gpu", "autotuning.enabled"),
    Configures("autotuning.min_train_micro_batch_size_per_gpu", "autotuning.enabled"),
    Configures("autotuning.num_tuning_micro_batch_sizes", "autotuning.enabled"),
    Configures("autotuning.tuner_type", "autotuning.enabled"),
    Configures("autotuning.tuner_early_stopping", "autotuning.enabled"),
    Configures("autotuning.tuner_num_trials", "autotuning.enabled"),
    Configures("autotuning.mp_size", "autotuning.enabled"),
    Configures("autotuning.arg_mappings", "autotuning.enabled"),
    Configures("autotuning.model_info", "autotuning.enabled"),
    Configures("autotuning.model_info_path", "autotuning.enabled"),
    NotSupported("data_efficiency.enabled"),
    Configures("data_efficiency.seed", "data_efficiency.enabled"),
    Configures("data_efficiency.data_sampling.*", "data_efficiency.data_sampling.enabled"),
    NotSupported("data_efficiency.data_sampling.enabled"),
    Configures("data_efficiency.data_sampling.num_epochs", "data_efficiency.data_sampling.enabled"),
    Configures("data_efficiency.data_sampling.num_workers",
               "data_efficiency.data_sampling.enabled"),
    Configures("data_efficiency.data_sampling.curriculum_learning",
               "data_efficiency.data_sampling.enabled"),
    Configures("data_efficiency.data_routing.*", "data_efficiency.data_routing.enabled"),
    NotSupported("data_efficiency.data_routing.enabled"),
    Configures("data_efficiency.data_routing.random_ltd", "data_efficiency.data_routing.enabled"),
    Configures("curriculum_learning.*", "curriculum_learning.enabled"),
    NotSupported("curriculum_learning.enabled"),
    NotSupported("progressive_layer_drop.enabled"),
    Configures("progressive_layer_drop.theta", "progressive_layer_drop.enabled"),
    Configures("progressive_layer_drop.gamma", "progressive_layer_drop.enabled"),
    NotSupported("eigenvalue.enabled"),
    Configures("eigenvalue.verbose", "eigenvalue.enabled"),
    Configures("eigenvalue.max_iter", "eigenvalue.enabled"),
    Configures("eigenvalue.tol", "eigenvalue.enabled"),
    Configures("eigenvalue.stability", "eigenvalue.enabled"),
    Configures("eigenvalue.gas_boundary_resolution", "eigenvalue.enabled"),
    Configures("eigenvalue.layer_name", "eigenvalue.enabled"),
    Configures("eigenvalue.layer_num", "eigenvalue.enabled"),
    NotSupported("hybrid_engine.enabled"),
    Configures("hybrid_engine.max_out_tokens", "hybrid_engine.enabled"),
    Configures("hybrid_engine.inference_tp_size", "hybrid_engine.enabled"),
    Configures("hybrid_engine.release_inference_cache", "hybrid_engine.enabled"),
    Configures("hybrid_engine.pin_parameters", "hybrid_engine.enabled"),
    Configures("hybrid_engine.tp_gather_partition_size", "hybrid_engine.enabled"),
    Configures("quantize_training.*", "quantize_training.enabled"),
    NotSupported("quantize_training.enabled"),
    Configures("nebula.*", "nebula.enabled"),
    NotSupported("nebula.enabled"),
    NotSupported("sparse_attention"),
    NotSupported("compression_training"),
    NotSupported("weight_quantization"),
    NotSupported("tensor_parallel"),
    NotSupported("dataloader_drop_last"),
    NotSupported("graph_harvesting"),
    NotSupported("use_data_before_expert_parallelism"),
    NoEffect("vocabulary_size",
             "DeepSpeed only compares it with the model's embedding size to print a warning; "
             "dstrain's vocabulary is model.vocab_size"),
    // dstrain's own blocks (docs/job-file.md).
    Acts("model.type", "worker/trainer/job_model.cc builds the GPT or the Llama"),
    Acts("model.n_layer", "worker/model: the GPT's shape"),
    Acts("model.n_head", "worker/model: the GPT's shape"),
    Acts("model.n_embd", "worker/model: the GPT's shape"),
    Acts("model.vocab_size", "worker/model: the GPT's shape"),
    Acts("model.block_size", "worker/model: the GPT's shape"),
    Acts("model.padded_vocab_size", "worker/model: the GPT's shape"),
    Acts("model.n_kv_head", kLlamaKey),
    Acts("model.intermediate_size", kLlamaKey),
    Acts("model.rope_theta", kLlamaKey),
    Acts("model.norm_eps", kLlamaKey),
    Acts("model.init_seed", "Engine::InitialParams"),
    Acts("model.init_from", "Engine::InitialParams"),
    Acts("data.train", "the trainer's data loader (worker/data)"),
    Acts("data.val", "the trainer's evaluation (worker/data)"),
    Acts("data.seq_len", "the trainer's data loader and Engine::Forward"),
    Acts("data.seed", "the trainer's data loader and its samples"),
    Acts("data.shuffle", "the trainer's data loader"),
    Acts("job.name", "the trainer's logs and the service"),
    Acts("job.world_size", "the trainer's ranks and the service's placement"),
    Acts("job.pipeline_stages", "the trainer's pipeline (worker/pipe, docs/job-file.md)"),
    Acts("job.train_steps", "the trainer's loop"),
    Acts("job.checkpoint_dir", "the trainer's checkpoints (docs/checkpoints.md)"),
    Acts("job.checkpoint_every", "the trainer's checkpoints (docs/checkpoints.md)"),
    Acts("job.keep_last", "the trainer's and the coordinator's checkpoint retention"),
    Acts("job.max_restarts", "the coordinator's restarts (docs/service.md)"),
    Acts("job.comm_timeout", "dstrain train's collective watchdog"),
    Acts("job.resume", "the trainer's start from the newest checkpoint"),
    Acts("job.eval_every", "the trainer's evaluation"),
    Acts("job.eval_batches", "the trainer's evaluation"),
    Acts("job.sample_every", "the trainer's text samples"),
    Acts("job.sample_tokens", "the trainer's text samples"),
    Acts("job.skip_nonfinite_steps", "JobConfig::skip_nonfinite_steps, the engine's step"),
    Acts("job.device",
         "the trainer's device (worker/device/rank_device.h), the coordinator's "
         "placement on GPU or CPU slots"),
    Acts("notes", "config.cc: keeps the notes of the keys the original job set"),
};

constexpr char kDocBegin[] =
    "<!-- Generated from worker/config/key_effects.cc (bazel run "
    "//worker/config:key_effects_doc -- --write docs/configuration.md); config_test checks it. "
    "-->";
constexpr char kDocEnd[] = "<!-- End of the generated table. -->";

}  // namespace

absl::Span<const KeyEffectRow> AllKeyEffects() {
  return absl::MakeConstSpan(kRows, std::size(kRows));
}

const KeyEffectRow* FindKeyEffect(absl::string_view path) {
  for (const KeyEffectRow& row : kRows) {
    if (row.path == path) return &row;
  }
  const size_t dot = path.rfind('.');
  if (dot == absl::string_view::npos) return nullptr;
  const std::string block_row = absl::StrCat(path.substr(0, dot), ".*");
  for (const KeyEffectRow& row : kRows) {
    if (row.path == block_row) return &row;
  }
  return nullptr;
}

std::string NoEffectReason(const KeyEffectRow& row) {
  if (row.configures == nullptr) return row.text == nullptr ? "" : row.text;
  const FeatureSwitch* s = FindFeatureSwitch(row.configures);
  return absl::StrCat("it only configures ", s == nullptr ? row.configures : s->feature,
                      ", which is not supported yet");
}

std::string NoEffectNote(absl::string_view path, const KeyEffectRow& row) {
  return absl::StrCat(path, ": no effect in dstrain: ", NoEffectReason(row));
}

std::string NoEffectDocSection() {
  std::string out = absl::StrCat(kDocBegin, "\n\n| key | why it has no effect |\n|---|---|\n");
  std::string keys, reason;
  auto flush = [&] {
    if (!keys.empty()) absl::StrAppend(&out, "| ", keys, " | ", reason, " |\n");
    keys.clear();
  };
  for (const KeyEffectRow& row : kRows) {
    if (row.effect != KeyEffect::kNoEffect) continue;
    const std::string why = NoEffectReason(row);
    if (why != reason) flush();
    reason = why;
    absl::StrAppend(&keys, keys.empty() ? "" : ", ", "`", row.path, "`");
  }
  flush();
  absl::StrAppend(&out, "\n", kDocEnd);
  return out;
}

absl::StatusOr<std::string> ReplaceNoEffectDocSection(absl::string_view doc) {
  const size_t begin = doc.find(kDocBegin);
  const size_t end = begin == absl::string_view::npos ? begin : doc.find(kDocEnd, begin);
  if (end == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("the markers of the generated table are missing: \"", kDocBegin, "\" ... \"",
                     kDocEnd, "\""));
  }
  return absl::StrCat(doc.substr(0, begin), NoEffectDocSection(),
                      doc.substr(end + std::string(kDocEnd).size()));
}

}  // namespace dstrain::config::internal
