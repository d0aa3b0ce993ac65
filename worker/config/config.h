// Job configuration: parsing and strict validation of a dstrain job file (docs/job-file.md).
//
// A job file is JSON: a DeepSpeed ds_config (same keys, same code defaults, same batch-size
// inference; docs/configuration.md) plus dstrain's `model`, `data` and `job` blocks. Instead of
// inlining the DeepSpeed keys, a job file may name an unchanged DeepSpeed config with
// `"deepspeed_config": "ds_config.json"` (relative to the job file's directory); a DeepSpeed key
// may then also appear inline, but not in both places. `//` and `/* */` comments are accepted, a
// repeated key in one object is an error, as in DeepSpeed.
//
// Unlike DeepSpeed, which ignores keys it does not know, everything is checked before a job
// starts: unknown keys (with a "did you mean" suggestion), JSON types, ranges, the batch triple,
// and DeepSpeed features dstrain does not implement yet (listed in features.cc), which are
// rejected unless set to their disabled/default value. A key that is accepted but has no effect
// in dstrain (key_effects.cc) is named in JobSpec::no_effect_notes when the job sets it. Every
// error is kInvalidArgument and its message starts with the key path, e.g.
//   zero_optimization.offload_param.device: parameter offload is not supported yet
//   optimizer.params.betaz: unknown key (did you mean "betas"?)
//   train_batch_size: 32 != train_micro_batch_size_per_gpu 4 * gradient_accumulation_steps 2 *
//       data-parallel size 2
// Key paths use dots for objects and [i] for arrays.
//
// JobSpec::effective is the whole configuration with every default and inferred value filled in
// (what `dstrain validate` prints). Parsing it again yields the same JobSpec.
//
// Thread-safety: the functions are reentrant; JobSpec is a plain value.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/types/dtype.h"
#include "worker/model/gpt_sizes.h"

namespace dstrain::config {

// optimizer: DeepSpeed's Adam/AdamW with FusedAdam's defaults. Without an optimizer block
// DeepSpeed needs an optimizer from the client; dstrain then uses AdamW with these defaults and
// says so in JobSpec::notes.
struct OptimizerConfig {
  std::string type = "AdamW";  // as written ("Adam", "adamw", ...; matched case-insensitively)
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  // Effective mode: DeepSpeed's `type == "adamw" || params.adam_w_mode` (adam_w_mode defaults to
  // true, so "Adam" runs AdamW, decoupled weight decay, unless adam_w_mode is false).
  bool adam_w_mode = true;
  bool bias_correction = true;
};

// scheduler: "" means no scheduler (the optimizer's lr throughout). Otherwise one of WarmupLR,
// WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest (DeepSpeed's names, case-sensitive as in
// DeepSpeed) with every parameter resolved: defaults filled, OneCycle's None-valued
// cycle_second_step_size / cycle_second_stair_count replaced by the first-half values.
struct SchedulerConfig {
  std::string type;
  nlohmann::json params = nlohmann::json::object();
};

// Where ZeRO keeps the optimizer state (zero_optimization.offload_optimizer.device;
// docs/offload.md).
enum class OffloadDevice { kNone, kCpu, kNvme };
const char* OffloadDeviceName(OffloadDevice d);

// zero_optimization.offload_optimizer (DeepSpeed's ZeRO-Offload and ZeRO-Infinity), resolved.
// nvme_path is absolute (resolved against the job file's directory) when device is kNvme.
struct OffloadOptimizerConfig {
  OffloadDevice device = OffloadDevice::kNone;
  std::string nvme_path;
  bool pin_memory = false;
  int64_t buffer_count = 4;     // swap buffers: sub-groups in flight between NVMe and memory
  bool pipeline_read = false;   // read the next sub-group while this one updates
  bool pipeline_write = false;  // write a sub-group back while the next one updates
  bool fast_init = false;       // swap files start as unwritten extents instead of written zeros
  double ratio = 1.0;
};

// zero_optimization.offload_param (ZeRO-Infinity's parameter offload, stage 3 only), resolved.
// Device "cpu" keeps a GPU rank's parameter partition in host memory (docs/offload.md,
// "Parameter offload"); "nvme" keeps it in a swap file under nvme_path (absolute, as for the
// optimizer), `buffer_count` chunks of at most `buffer_size` elements in host memory at a time
// ("Parameters on NVMe").
struct OffloadParamConfig {
  OffloadDevice device = OffloadDevice::kNone;
  std::string nvme_path;
  bool pin_memory = false;
  int64_t buffer_count = 5;
  int64_t buffer_size = 100000000;
};

// aio: how the NVMe swap engine drives the disk (worker/offload/swap_engine.h).
struct AioConfig {
  int64_t block_size = 1048576;  // bytes per request
  int queue_depth = 8;           // requests in flight per I/O thread
  int intra_op_parallelism = 1;  // I/O threads (each with its own ring)
  bool single_submit = false;    // one request per submission call instead of a batch
  bool overlap_events = true;    // submit new requests while earlier ones complete
};

// zero_optimization, the keys the engine reads (all keys are in JobSpec::effective; the keys
// without effect are listed in key_effects.cc and docs/configuration.md). Defaults are
// DeepSpeed's; sizes are counted in elements, as DeepSpeed counts them.
struct ZeroConfig {
  int stage = 0;
  // Average the gradients with reduce-scatters (true) or with all-reduces (false).
  bool reduce_scatter = true;
  int64_t reduce_bucket_size = 500000000;
  // Stages 1-2: the most elements one all-gather of the updated parameters covers.
  int64_t allgather_bucket_size = 500000000;
  // Stages 1-2: gather the updated parameters with all-gathers (true) or with broadcasts from
  // each partition's owner (false).
  bool allgather_partitions = true;
  bool overlap_comm = false;  // DeepSpeed's None resolves to true for stage 3, else false
  // The most elements of this rank's partition one optimizer update covers at a time.
  int64_t sub_group_size = 1000000000;
  int64_t prefetch_bucket_size = 50000000;
  int64_t param_persistence_threshold = 100000;
  int64_t model_persistence_threshold = std::numeric_limits<int64_t>::max();
  int64_t max_live_parameters = 1000000000;
  int64_t max_reuse_distance = 1000000000;
  bool gather_16bit_weights_on_model_save = false;
  OffloadOptimizerConfig offload_optimizer;
  OffloadParamConfig offload_param;
};

// fp16 and its dynamic loss scaler (docs/configuration.md, "The dynamic loss scaler (fp16)").
struct Fp16Config {
  bool enabled = false;
  double loss_scale = 0.0;  // 0 = dynamic loss scaling, else a static scale
  int initial_scale_power = 16;
  int64_t loss_scale_window = 1000;
  int hysteresis = 2;
  bool consecutive_hysteresis = false;
  double min_loss_scale = 1.0;
  bool fp16_master_weights_and_grads = false;
  // DeepSpeed forwards the dynamic-scaler keys (initial_scale_power, loss_scale_window,
  // min_loss_scale, hysteresis, consecutive_hysteresis) to the ZeRO loss scaler only when at
  // least one of them is present; otherwise the scaler starts at 2^32 with hysteresis 1. True
  // when fp16 is enabled and one of them was given.
  bool dynamic_loss_args_given = false;
};

struct Bf16Config {
  bool enabled = false;
  bool immediate_grad_update = false;
};

// model: a GPT-2-style transformer (llm.c's layout).
struct ModelConfig {
  std::string type = "gpt";  // "gpt"; "module": a dstrain::Module given to Initialize
  int n_layer = 0;
  int n_head = 0;
  int n_embd = 0;
  int vocab_size = 0;
  int block_size = 0;         // maximum sequence length (positional embeddings)
  int padded_vocab_size = 0;  // default: vocab_size rounded up to a multiple of 128
  // type "llama" (docs/job-file.md, "Llama"): key-value heads of grouped-query attention
  // (default n_head), the SwiGLU MLP's width (required), RoPE's base and RMSNorm's epsilon
  // (Hugging Face's LlamaConfig defaults 10000 and 1e-6). 0 for the GPT.
  int n_kv_head = 0;
  int intermediate_size = 0;
  double rope_theta = 0;
  double norm_eps = 0;
  uint64_t init_seed = 1337;
  std::string init_from;  // optional llm.c model file, path resolved; "" = random init
};

// The model block as the model code takes it (worker/model/gpt_sizes.h).
model::GptConfig ModelShape(const ModelConfig& m);

// data: token shards or raw text, paths resolved against the job file's directory.
struct DataConfig {
  std::string train;  // glob of llm.c .bin token shards, or a .txt file (byte-level tokens)
  std::string val;    // same kinds; "" = no validation data
  int seq_len = 0;    // default model.block_size; <= block_size
  uint64_t seed = 1337;
  bool shuffle = true;
};

// checkpoint (DeepSpeed's own checkpoint options; docs/checkpoints.md).
// tag_validation: whether a save checks that every rank passes the same tag (DeepSpeed's
// Ignore / Warn / Fail, written in any case).
enum class TagValidation { kIgnore, kWarn, kFail };
struct CheckpointConfig {
  TagValidation tag_validation = TagValidation::kWarn;
};

// job.device: what the ranks compute on (docs/job-file.md, "job").
enum class JobDevice { kAuto, kCpu, kCuda };
// "auto", "cpu", "cuda".
const char* JobDeviceName(JobDevice device);

struct JobConfig {
  std::string name;  // LoadJobSpec defaults it to the job file's stem
  int world_size = 1;
  int pipeline_stages = 1;
  int64_t train_steps = 0;     // optimizer steps in total (> 0, required)
  std::string checkpoint_dir;  // resolved; "" = no checkpoints
  int64_t checkpoint_every = 0;
  int keep_last = 3;
  int max_restarts = 0;
  // Seconds a collective or the rendezvous may wait for a peer before the trainer's watchdog
  // aborts it (naming the operation, the group and the rank waited for) and the rank fails.
  double comm_timeout_s = 300;
  bool resume = true;
  int64_t eval_every = 100;
  int eval_batches = 20;
  int64_t sample_every = 0;
  int sample_tokens = 0;
  // fp32 training skips (and counts) a step whose gradients hold an inf or NaN, as fp16 and bf16
  // training always do (docs/job-file.md, "job").
  bool skip_nonfinite_steps = false;
  // kAuto: CUDA when the rank sees a GPU, else the CPU. Under the service the worker agent has
  // placed the rank already and tells the trainer (--device), which overrides this.
  JobDevice device = JobDevice::kAuto;
};

// Pipeline parallelism (docs/job-file.md, "Pipeline parallelism"): job.pipeline_stages with
// DeepSpeed's pipeline block.
struct PipelineConfig {
  int stages = 1;
  // pipeline.partition: "parameters" (also DeepSpeed's config default "best"), "uniform" or
  // "type:REGEX" (worker/pipe/layer_partition.h).
  std::string partition_method = "parameters";
  // > 0: activation checkpointing over segments of this many blocks (model::ActivationPlan).
  int activation_checkpoint_interval = 0;
  // activation_checkpointing.synchronize_checkpoint_boundary and .profile.
  bool synchronize_checkpoint_boundary = false;
  bool profile_checkpoints = false;
  // activation_checkpointing.cpu_checkpointing: the kept activations in host memory (the CPU
  // device's memory; refused on CUDA devices).
  bool cpu_checkpointing = false;
};

struct JobSpec {
  // The batch triple after DeepSpeed's inference (docs/job-file.md, "Batch size"):
  // train_batch_size == train_micro_batch_size_per_gpu * gradient_accumulation_steps *
  // data_parallel_size.
  int64_t train_batch_size = 0;
  int64_t train_micro_batch_size_per_gpu = 0;
  int64_t gradient_accumulation_steps = 0;
  int data_parallel_size = 1;  // job.world_size / job.pipeline_stages

  double gradient_clipping = 0.0;  // DeepSpeed's code default 0 = off (its docs say 1.0)
  // Gradient reduction (docs/configuration.md, "Gradient averaging"). communication_data_type
  // resolved: DeepSpeed's None is the training precision ("fp16" / "bf16" when enabled, else
  // "fp32").
  std::string communication_data_type = "fp32";
  bool prescale_gradients = false;         // grad *= 1/N before the sum, nothing after
  double gradient_predivide_factor = 1.0;  // grad *= 1/f before the sum, *= f/N after
  std::optional<int64_t> steps_per_print;  // code default None (docs say 10)
  // data_types.grad_accum_dtype: the type gradients are accumulated in over the micro-batches of
  // a step. nullopt is DeepSpeed's None: the engine's default, the parameters' storage type. A
  // 16-bit type is the training precision's (checked); kF32 may go with any precision.
  std::optional<DType> grad_accum_dtype;

  OptimizerConfig optimizer;
  SchedulerConfig scheduler;
  ZeroConfig zero;
  Fp16Config fp16;
  Bf16Config bf16;
  ModelConfig model;
  DataConfig data;
  JobConfig job;
  PipelineConfig pipeline;
  CheckpointConfig checkpoint;
  AioConfig aio;

  // Remarks about the config that are not errors (a default that differs from DeepSpeed's docs,
  // a key that has no effect, ...). Also in effective["notes"].
  std::vector<std::string> notes;
  // The notes of the keys this job sets that have no effect in dstrain (docs/configuration.md,
  // "Keys without effect"), one per key: "<key path>: no effect in dstrain: <why>". They are the
  // last entries of `notes` too. A key counts as set when the job file writes it. An effective
  // configuration (a file with a `notes` list, as `dstrain validate` prints it) writes every key,
  // so there a key counts as set when its value differs from DeepSpeed's default or the file's
  // `notes` already hold its note: the effective configuration parses back to the same notes.
  std::vector<std::string> no_effect_notes;

  // The full effective config: every DeepSpeed key dstrain knows with DeepSpeed's code default
  // filled in, the inferred batch values, resolved optimizer and scheduler parameters, and the
  // resolved model/data/job blocks. Numbers are stored so that dump() round-trips them exactly.
  nlohmann::json effective;
};

// The training precision: "fp16", "bf16" or "fp32".
const char* PrecisionName(const JobSpec& spec);

// "note: <note>\n" for each of `notes`: what `dstrain validate`, `train`, `launch` and `submit`
// print on stderr for JobSpec::no_effect_notes.
std::string NoteLines(const std::vector<std::string>& notes);

// Parses and validates a job file's text. `base_dir` resolves relative paths (data, init_from,
// checkpoint_dir, deepspeed_config); "" leaves them relative to the working directory.
// `world_size_override` (from `--world N`) replaces job.world_size before validation.
absl::StatusOr<JobSpec> ParseJobSpec(std::string_view json_text, const std::string& base_dir,
                                     std::optional<int> world_size_override = std::nullopt);

// Parses and validates a DeepSpeed config alone (the `config` of deepspeed.initialize), for
// dstrain::Initialize: every DeepSpeed key as in a job file, with `world_size` data-parallel ranks
// for the batch rules; dstrain's model, data and job blocks are refused (kInvalidArgument naming
// the block: the user's module is the model, the program runs the loop). The result's model.type
// is "module", job.world_size is `world_size`, job.train_steps 0, and `effective` has no job block.
absl::StatusOr<JobSpec> ParseDeepSpeedConfig(std::string_view json_text, int world_size,
                                             const std::string& base_dir = "");

// Validates a scheduler block's parameters and fills DeepSpeed's defaults, exactly as for the
// "scheduler" block of a job file. An empty `type` means no scheduler; `params` may be null.
// Errors are kInvalidArgument naming "scheduler.type" or "scheduler.params.<key>".
absl::StatusOr<SchedulerConfig> ResolveSchedulerConfig(std::string_view type,
                                                       const nlohmann::json& params);

// Reads `path` and parses it with base_dir = the file's (absolute) directory. Errors reading the
// file are kNotFound / kInvalidArgument naming the file.
absl::StatusOr<JobSpec> LoadJobSpec(const std::string& path,
                                    std::optional<int> world_size_override = std::nullopt);

}  // namespace dstrain::config
