// dstrain: the command-line interface (README.md, "Commands"; the job file: docs/job-file.md).
//
//   dstrain validate JOB.json [--world N]
//   dstrain prepare --text FILE --out DIR [--val-fraction F]
//                   [--tokenizer tokenizer.json | --vocab vocab.json --merges merges.txt]
//   dstrain train JOB.json [--metrics-out FILE.jsonl] [--threads N] [--save-model FILE]
//                 [--save-initial-model FILE]
//   dstrain launch --nproc N JOB.json [--metrics-out FILE.jsonl]
//   dstrain launch --nproc N -- PROGRAM [ARGS...]
//   dstrain estimate JOB.json [--world N] [--device cpu|cuda] [--json]
//   dstrain export CHECKPOINT_DIR --out FILE [--tag TAG] [--format llmc|safetensors]
//   dstrain submit|list|status|watch|logs|cancel|delete|workers|checkpoints ...
//   (service_commands.h)
//
// Exit codes: 0 success, 1 the command ran and failed, 2 bad usage, an invalid job or missing
// input files.
#include <fcntl.h>
#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/service_commands.h"
#include "common/crypto/hmac.h"
#include "common/flags/flags.h"
#include "common/runtime/exit_codes.h"
#include "common/runtime/process_init.h"
#include "common/status/status_macros.h"
#include "common/tls/tls.h"
#include "coordinator/auth/caller.h"
#include "coordinator/auth/token_table.h"
#include "worker/config/config.h"
#include "worker/data/prepare.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/device/rank_device.h"
#include "worker/engine/checkpoint_io.h"
#include "worker/env/env.h"
#include "worker/launcher/launcher.h"
#include "worker/model/param_layout.h"
#include "worker/pipe/stage_estimate.h"
#include "worker/trainer/job_model.h"
#include "worker/trainer/trainer.h"
#include "worker/zero/estimate.h"

namespace dstrain::cli {
namespace {

constexpr char kUsage[] = R"(usage: dstrain <command> [arguments]

commands:
  validate JOB.json [--world N]
      Check a job file and print the effective configuration (every default and inferred
      value filled in) as JSON. Exit 2 with the key path of the first error. Each key the job
      sets that has no effect in dstrain gets a "note: KEY: no effect in dstrain: WHY" line on
      stderr (validate, train, launch and submit).
  prepare --text FILE --out DIR [--val-fraction F]
          [--tokenizer tokenizer.json | --vocab vocab.json --merges merges.txt]
      Turn a text file into llm.c token shards: DIR/train_000000.bin ... and
      DIR/val_000000.bin (the last F of the text, default 0.1). The byte-level vocabulary (256
      tokens) unless a byte-level BPE tokenizer is given, as a Hugging Face tokenizer.json or
      GPT-2's vocab.json + merges.txt (docs/tokenization.md). DIR/tokenizer.txt records the
      tokenizer (its vocab_size and the SHA-256 of its files).
  train JOB.json [--metrics-out FILE.jsonl] [--threads N] [--save-model FILE]
                [--save-initial-model FILE]
      Train in this process, on job.device. (--rank, --world, --store, --comm-timeout and
      --no-notes are set by `launch`; --store grpc://HOST:PORT, --store-prefix, --job-id,
      --attempt, --catalog and --device cpu|cuda, which overrides job.device, by
      dstrain-worker. --local-rank R picks GPU R mod the GPUs visible, default the rank;
      --device-memory-limit BYTES caps the GPU memory the rank may use; --bind-address ADDR,
      this host's address that other hosts reach (default 127.0.0.1, set by dstrain-worker),
      is where the rank's Gloo connections listen.) Progress goes to
      stdout; one JSON object per optimizer step to
      --metrics-out; --save-model writes the final weights in llm.c's model format,
      --save-initial-model the weights before the first step (same format).
  launch --nproc N JOB.json [--metrics-out FILE.jsonl] [--save-model FILE]
         [--comm-timeout SECONDS]
      Train on N processes on this machine (data parallel over Gloo, a TCP rendezvous store
      served by the launcher). Output lines are prefixed with the rank; if a rank fails, all are
      stopped and the exit status is non-zero, naming the rank. Ctrl-C stops every rank.
      Each rank gets an equal share of the CPUs.
  launch --nproc N -- PROGRAM [ARGS...]
      Run N processes of your own program (dstrain::Initialize, docs/library.md) the same way;
      each learns its place from RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, DSTRAIN_STORE
      and DSTRAIN_THREADS in its environment.
  estimate JOB.json [--world N] [--device cpu|cuda] [--json]
      Per-rank memory of the job for each ZeRO stage at N data-parallel ranks (default: the
      job's): parameters, gradients and optimizer state exactly as the engine will allocate
      them, beside the ZeRO paper's formulas, activations of one micro-batch, and bounds of the
      stage 2/3 gradient buckets and stage 3 gathered modules. Sized for the job's device
      (job.device; "auto": a GPU if this machine sees one), or --device's: a GPU rank's figures
      are its device memory, with what offload keeps in host memory beside them.
  export CHECKPOINT_DIR --out FILE [--tag TAG] [--format llmc|safetensors]
      Write the fp32 weights of a committed checkpoint (default: the latest), whatever world
      size, ZeRO stage and precision wrote it, as one llm.c model file (the GPT's; model.init_from
      reads it) or as safetensors under the parameters' names (any model; the default for an
      --out ending in .safetensors).
  token PRINCIPAL ROLES [--append FILE]
      Make a bearer token for PRINCIPAL ([a-z0-9._@-], up to 64 characters) with ROLES
      (viewer, submitter, admin; comma-separated). Prints the token; the line for the
      coordinator's --tokens file (its SHA-256 hash, the principal, the roles) is appended to
      FILE (created 0600) or printed on stderr. The token itself is stored nowhere.
  help
      Show this text.
)";

void PrintUsage(FILE* f) {
  std::fputs(kUsage, f);
  std::fputs("\n", f);
  std::fputs(kServiceCommandsUsage, f);
}

int Fail(const absl::Status& s, int code) {
  absl::FPrintF(stderr, "dstrain: %s\n", s.message());
  return code;
}

// `COMMAND JOB.json [--world N]`: the job, loaded and checked (errors are usage errors, 2).
absl::StatusOr<config::JobSpec> LoadJobArg(const std::vector<std::string>& args,
                                           const char* command,
                                           const std::set<std::string>& bool_flags = {},
                                           flags::ParsedArgs* out = nullptr,
                                           std::set<std::string> value_flags = {}) {
  value_flags.insert("world");
  DT_ASSIGN_OR_RETURN(flags::ParsedArgs parsed, flags::ParseArgs(args, value_flags, bool_flags));
  if (out != nullptr) *out = parsed;
  if (parsed.positional.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(command, " takes exactly one JOB.json"));
  }
  std::optional<int> world;
  if (parsed.Has("world")) {
    DT_ASSIGN_OR_RETURN(world, parsed.GetInt("world", 1));
  }
  return config::LoadJobSpec(parsed.positional[0], world);
}

// job.device "cuda" needs a GPU where the job is checked (validate, launch): an error naming the
// key, as for any other bad value.
absl::Status CheckDeviceVisible(const config::JobSpec& spec) {
  if (spec.job.device != config::JobDevice::kCuda) return absl::OkStatus();
  std::string why;
  if (device::VisibleCudaDevices(&why) > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("job.device: \"cuda\": no CUDA device visible (", why, ")"));
}

// --device cpu|cuda (the worker agent's placement, over job.device), --local-rank (which GPU:
// local rank mod the GPUs visible; default the rank), --device-memory-limit BYTES (a GPU
// allocator's budget) and --bind-address (where host-memory groups listen).
absl::Status DeviceFlags(const flags::ParsedArgs& parsed, trainer::TrainOptions* options) {
  if (parsed.Has("device")) {
    const std::string device = parsed.Get("device");
    if (device == "cpu") {
      options->device = config::JobDevice::kCpu;
    } else if (device == "cuda") {
      options->device = config::JobDevice::kCuda;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--device: expected cpu or cuda, got '", device, "'"));
    }
  }
  if (parsed.Has("local-rank")) {
    DT_ASSIGN_OR_RETURN(const int local_rank, parsed.GetInt("local-rank", 0));
    if (local_rank < 0) return absl::InvalidArgumentError("--local-rank must be >= 0");
    options->local_rank = local_rank;
  }
  DT_ASSIGN_OR_RETURN(const int64_t limit, parsed.GetInt64("device-memory-limit", 0));
  if (limit < 0) return absl::InvalidArgumentError("--device-memory-limit must be >= 0");
  options->device_memory_limit = limit;
  if (parsed.Has("bind-address")) {
    options->bind_address = parsed.Get("bind-address");
    if (options->bind_address.empty()) {
      return absl::InvalidArgumentError("--bind-address: empty (expected this host's address)");
    }
  }
  return absl::OkStatus();
}

int Validate(const std::vector<std::string>& args) {
  auto spec = LoadJobArg(args, "validate");
  if (!spec.ok()) return Fail(spec.status(), 2);
  if (absl::Status s = CheckDeviceVisible(*spec); !s.ok()) return Fail(s, 2);
  // stdout stays the effective configuration alone; its `notes` hold the same lines.
  std::fputs(config::NoteLines(spec->no_effect_notes).c_str(), stderr);
  std::printf("%s\n", spec->effective.dump(2).c_str());
  return 0;
}

// The job's stage with zero_optimization.offload_optimizer.device none, cpu and nvme (nvme with
// the job's own offload settings where it sets them, DeepSpeed's defaults else).
std::vector<zero::MemoryEstimate> OffloadEstimates(const config::JobSpec& spec,
                                                   const model::ParamLayout& layout,
                                                   int64_t activations, int world,
                                                   const device::Sizing& ops) {
  std::vector<zero::MemoryEstimate> out;
  if (spec.zero.stage == 0) return out;  // offload needs ZeRO stage 1 or more
  for (config::OffloadDevice device :
       {config::OffloadDevice::kNone, config::OffloadDevice::kCpu, config::OffloadDevice::kNvme}) {
    config::ZeroConfig zero = spec.zero;
    zero.offload_optimizer.device = device;
    out.push_back(zero::EstimateMemory(layout, activations, zero, spec.zero.stage, world, ops,
                                       zero::StatePrecision::Of(spec)));
  }
  return out;
}

std::string DescribeOffload(const std::vector<zero::MemoryEstimate>& estimates,
                            const config::JobSpec& spec, bool gpu_rank) {
  std::string out = absl::StrFormat(
      "zero_optimization.offload_optimizer at stage %d, per rank in MB, as a %s rank holds it\n"
      "%-10s%14s%18s%12s%12s\n",
      spec.zero.stage, gpu_rank ? "GPU" : "CPU", "device",
      gpu_rank ? "GPU (total)" : "memory (total)", "optimizer_state", "host", "NVMe");
  for (const zero::MemoryEstimate& e : estimates) {
    const int64_t memory =
        e.model_states() + e.activations + e.comm_buffers_peak + e.gathered_params_peak;
    absl::StrAppend(
        &out, absl::StrFormat(
                  "%-10s%14.2f%18.2f%12.2f%12.2f%s\n", config::OffloadDeviceName(e.offload),
                  memory / 1e6, e.optimizer_state / 1e6, e.host_bytes / 1e6, e.nvme_bytes / 1e6,
                  e.offload == spec.zero.offload_optimizer.device ? "   <- the job's" : ""));
  }
  absl::StrAppend(&out, gpu_rank ? "(cpu: the optimizer state and the update's staging in host "
                                   "memory, the step on the host; nvme: the state in the swap "
                                   "file, its buffers in host memory)\n"
                                 : "(cpu: the state is in host memory already; nvme: only the "
                                   "swap's buffers stay in memory, buffer_count x the largest "
                                   "sub-group, sub_group_size bounds them)\n");
  return out;
}

int Estimate(const std::vector<std::string>& args) {
  flags::ParsedArgs parsed;
  auto spec = LoadJobArg(args, "estimate", {"json"}, &parsed, {"device"});
  if (!spec.ok()) return Fail(spec.status(), 2);
  // The device the ranks are sized for: --device, else job.device, else ("auto") CUDA when this
  // machine sees a GPU. A GPU rank is sized by CudaSizing, which needs no GPU.
  bool gpu_rank = spec->job.device == config::JobDevice::kCuda;
  std::string sized_by =
      absl::StrCat("job.device \"", config::JobDeviceName(spec->job.device), "\"");
  if (parsed.Has("device")) {
    const std::string d = parsed.Get("device");
    if (d != "cpu" && d != "cuda") {
      return Fail(absl::InvalidArgumentError(
                      absl::StrCat("--device: \"", d, "\": expected \"cpu\" or \"cuda\"")),
                  2);
    }
    gpu_rank = d == "cuda";
    sized_by = "--device";
  } else if (spec->job.device == config::JobDevice::kAuto) {
    std::string why;
    gpu_rank = device::VisibleCudaDevices(&why) > 0;
    absl::StrAppend(&sized_by,
                    gpu_rank ? ": this machine sees a GPU" : ": this machine sees no GPU");
  }
  auto layout = trainer::JobModelLayout(*spec);
  if (!layout.ok()) return Fail(layout.status(), 2);
  // Each rank's kernels get an equal share of the CPUs, as under `dstrain launch`; the attention
  // backward's scratch depends on it.
  cpu_set_t set;
  CPU_ZERO(&set);
  const int cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  const int n = spec->data_parallel_size;
  omp_set_num_threads(std::max(1, cpus / static_cast<int>(spec->job.world_size)));
  // The device the job's ranks run on sizes what it decides (the attention's saved state).
  tensor::CpuAllocator allocator;
  device::CpuOps cpu_ops(&allocator);
  device::CudaSizing cuda_sizing;
  const device::Sizing& ops = gpu_rank ? static_cast<const device::Sizing&>(cuda_sizing) : cpu_ops;
  // Per pipeline stage (one stage without pipeline): what the job's own setting holds.
  auto stages = trainer::EstimateJobStages(*spec, ops);
  if (!stages.ok()) return Fail(stages.status(), 2);
  auto activations = trainer::JobActivationBytes(*spec, ops, pipe::StagePlan(*spec, 1));
  if (!activations.ok()) return Fail(activations.status(), 2);
  // Every optimizer offload setting at the job's stage (one stage without pipeline).
  const std::vector<zero::MemoryEstimate> offload =
      spec->pipeline.stages == 1 ? OffloadEstimates(*spec, *layout, *activations, n, ops)
                                 : std::vector<zero::MemoryEstimate>{};
  if (parsed.Has("json")) {
    nlohmann::json out = {{"device", gpu_rank ? "cuda" : "cpu"},
                          {"stages", pipe::StagesToJson(*stages, spec->model.n_layer)}};
    if (!offload.empty()) {
      for (const zero::MemoryEstimate& e : offload) {
        out["offload_optimizer"][config::OffloadDeviceName(e.offload)] = {
            {"memory_bytes",
             e.model_states() + e.activations + e.comm_buffers_peak + e.gathered_params_peak},
            {"optimizer_state_bytes", e.optimizer_state},
            {"params_bytes", e.params},
            {"host_bytes", e.host_bytes},
            {"nvme_bytes", e.nvme_bytes}};
      }
    }
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("sized for a %s rank (%s; --device cpu|cuda for the other)\n",
              gpu_rank ? "GPU" : "CPU", sized_by.c_str());
  if (spec->pipeline.stages == 1) {
    // Every ZeRO stage side by side, for choosing one.
    std::vector<zero::MemoryEstimate> estimates;
    for (int stage = 0; stage <= 3; ++stage) {
      estimates.push_back(zero::EstimateMemory(*layout, *activations, spec->zero, stage, n, ops,
                                               zero::StatePrecision::Of(*spec)));
    }
    std::printf("%s", zero::DescribeEstimates(estimates, layout->num_parameters()).c_str());
    std::printf("the job selects stage %d; %s\n\n", spec->zero.stage,
                spec->fp16.enabled || spec->bf16.enabled
                    ? "16-bit parameters and gradients, fp32 master weights and Adam moments"
                    : "fp32 parameters, gradients and Adam moments");
  }
  // Per pipeline stage with the activation checkpointing choices, which only the GPT has.
  if (spec->model.type == "gpt") std::printf("%s", pipe::DescribeStages(*stages, *spec).c_str());
  if (!offload.empty()) std::printf("\n%s", DescribeOffload(offload, *spec, gpu_rank).c_str());
  return 0;
}

int Export(const std::vector<std::string>& args) {
  auto parsed = flags::ParseArgs(args, {"out", "tag", "format"}, {});
  if (!parsed.ok()) return Fail(parsed.status(), 2);
  if (parsed->positional.size() != 1 || !parsed->Has("out")) {
    return Fail(absl::InvalidArgumentError("usage: dstrain export CHECKPOINT_DIR --out FILE "
                                           "[--tag TAG] [--format llmc|safetensors]"),
                2);
  }
  const std::string tag = parsed->Has("tag") ? parsed->Get("tag") : "latest";
  const std::string out = parsed->Get("out");
  // Without --format, the file's name decides: *.safetensors is safetensors, else llm.c's format.
  const std::string format = parsed->Has("format")                 ? parsed->Get("format")
                             : absl::EndsWith(out, ".safetensors") ? "safetensors"
                                                                   : "llmc";
  if (format != "llmc" && format != "safetensors") {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
                    "--format: expected \"llmc\" or \"safetensors\", got \"", format, "\"")),
                2);
  }
  const absl::Status s = [&]() -> absl::Status {
    if (format == "llmc") {
      return engine::ExportCheckpoint(env::PosixEnv::Default(), parsed->positional[0], tag, out,
                                      engine::ExportFormat::kLlmc);
    }
    DT_ASSIGN_OR_RETURN(
        const engine::CheckpointWeights w,
        engine::ReadCheckpointWeights(env::PosixEnv::Default(), parsed->positional[0], tag));
    // A job's checkpoint names its model (meta.job_model): the Llama's weights go out under
    // Hugging Face's names. Any other checkpoint: every parameter under its own name.
    if (const auto m = w.meta.find("job_model"); m != w.meta.end()) {
      DT_ASSIGN_OR_RETURN(const config::ModelConfig model, trainer::ModelFromMeta(*m));
      if (model.type == "llama") {
        return trainer::WriteModelFile(out, model, w.layout, w.weights.data());
      }
    }
    return engine::WriteSafetensors(env::PosixEnv::Default(), w, out);
  }();
  if (!s.ok()) return Fail(s, 1);
  std::printf("wrote %s (%s) from %s (%s)\n", out.c_str(), format.c_str(),
              parsed->positional[0].c_str(), tag.c_str());
  return 0;
}

int Prepare(const std::vector<std::string>& args) {
  auto parsed =
      flags::ParseArgs(args, {"text", "out", "val-fraction", "tokenizer", "vocab", "merges"}, {});
  if (!parsed.ok()) return Fail(parsed.status(), 2);
  const bool gpt2_files = parsed->Has("vocab") || parsed->Has("merges");
  if (!parsed->Has("text") || !parsed->Has("out") || !parsed->positional.empty() ||
      (parsed->Has("tokenizer") && gpt2_files) ||
      (gpt2_files && !(parsed->Has("vocab") && parsed->Has("merges")))) {
    return Fail(absl::InvalidArgumentError(
                    "usage: dstrain prepare --text FILE --out DIR [--val-fraction F] "
                    "[--tokenizer tokenizer.json | --vocab vocab.json --merges merges.txt]"),
                2);
  }
  data::PrepareOptions options;
  auto frac = parsed->GetDouble("val-fraction", options.val_fraction);
  if (!frac.ok()) return Fail(frac.status(), 2);
  options.val_fraction = *frac;
  if (parsed->Has("tokenizer")) options.tokenizer_json = parsed->Get("tokenizer");
  if (parsed->Has("vocab")) options.vocab_json = parsed->Get("vocab");
  if (parsed->Has("merges")) options.merges_txt = parsed->Get("merges");
  auto summary = data::PrepareText(parsed->Get("text"), parsed->Get("out"), options);
  if (!summary.ok()) return Fail(summary.status(), 1);
  absl::PrintF("tokenizer: %s, vocab_size %d\n", summary->tokenizer, summary->vocab_size);
  absl::PrintF("%d bytes of text -> %d training tokens in %d shard(s), %d validation tokens\n",
               summary->text_bytes, summary->train_tokens, summary->train_files.size(),
               summary->val_tokens);
  for (const std::string& f : summary->train_files) absl::PrintF("  %s\n", f);
  for (const std::string& f : summary->val_files) absl::PrintF("  %s\n", f);
  absl::PrintF("  %s (a model needs model.vocab_size >= %d)\n", summary->tokenizer_file,
               summary->vocab_size);
  return 0;
}

int Train(const std::vector<std::string>& args) {
  auto parsed = flags::ParseArgs(
      args,
      {"metrics-out", "threads", "save-model", "save-initial-model", "rank", "world", "store",
       "comm-timeout", "store-prefix", "job-id", "attempt", "catalog", "device", "local-rank",
       "device-memory-limit", "data-root", "bind-address"},
      {"no-notes"});
  if (!parsed.ok()) return Fail(parsed.status(), 2);
  if (parsed->positional.size() != 1) {
    return Fail(absl::InvalidArgumentError("train takes exactly one JOB.json"), 2);
  }
  std::optional<int> world;
  if (parsed->Has("world")) {
    auto w = parsed->GetInt("world", 1);
    if (!w.ok()) return Fail(w.status(), 2);
    world = *w;
  }
  auto spec = config::LoadJobSpec(parsed->positional[0], world);
  if (!spec.ok()) return Fail(spec.status(), 2);
  trainer::TrainOptions options;
  auto rank = parsed->GetInt("rank", 0);
  if (!rank.ok()) return Fail(rank.status(), 2);
  options.rank = *rank;
  // One rank says it for the job (in service mode, into the job's log); under `launch` the
  // launcher has said it already (--no-notes).
  if (*rank == 0 && !parsed->Has("no-notes")) {
    std::fputs(config::NoteLines(spec->no_effect_notes).c_str(), stderr);
  }
  // Service mode: the worker agent sets --store grpc://COORDINATOR with --store-prefix, --job-id,
  // --attempt and --catalog.
  auto rendezvous = trainer::Rendezvous::Parse(parsed->Get("store"), parsed->Get("store-prefix"));
  if (!rendezvous.ok()) return Fail(rendezvous.status(), 2);
  options.rendezvous = *rendezvous;
  // The attempt's store credential comes in the environment, out of other users' `ps`.
  if (const char* token = std::getenv("DSTRAIN_STORE_TOKEN"); token != nullptr) {
    options.rendezvous.token = token;
  }
  options.service.job_id = parsed->Get("job-id");
  options.service.catalog = parsed->Get("catalog");
  options.service.data_root = parsed->Get("data-root");
  auto attempt = parsed->GetInt("attempt", 0);
  if (!attempt.ok()) return Fail(attempt.status(), 2);
  options.service.attempt = *attempt;
  // --comm-timeout overrides the job's job.comm_timeout.
  auto timeout_s = parsed->GetDouble("comm-timeout", spec->job.comm_timeout_s);
  if (!timeout_s.ok()) return Fail(timeout_s.status(), 2);
  options.comm_timeout = absl::Seconds(*timeout_s);
  // Under a worker agent, SIGUSR1 asks for a drain (checkpoint at the next step and leave).
  options.drain_on_sigusr1 = !options.service.job_id.empty();
  options.metrics_out = parsed->Get("metrics-out");
  options.save_model = parsed->Get("save-model");
  options.save_initial_model = parsed->Get("save-initial-model");
  auto threads = parsed->GetInt("threads", 0);
  if (!threads.ok()) return Fail(threads.status(), 2);
  options.threads = *threads;
  if (absl::Status s = DeviceFlags(*parsed, &options); !s.ok()) return Fail(s, 2);
  auto result = trainer::Train(*spec, options);
  if (!result.ok()) {
    // Bad input (an invalid job, a missing data file) is a usage error; a lost peer, a collective
    // past its timeout or an unreachable rendezvous is retryable (the job may restart on healthy
    // workers); anything else means the training itself failed. See common/runtime/exit_codes.h.
    const absl::StatusCode code = result.status().code();
    int exit_code = kExitFailed;
    if (code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound) {
      exit_code = kExitUsage;
    } else if (code == absl::StatusCode::kUnavailable ||
               code == absl::StatusCode::kDeadlineExceeded || code == absl::StatusCode::kAborted) {
      exit_code = kExitPeerLost;
    }
    return Fail(result.status(), exit_code);
  }
  return result->drained ? kExitDrained : kExitOk;
}

// dstrain launch --nproc N -- PROGRAM [ARGS...]: a user's own program (dstrain::Initialize), each
// rank told its place in the environment (launcher.h, LaunchOptions::rank_env).
// Runs the ranks; the exit status is the first failing rank's (named on stderr), else 0.
int RunLaunch(const launcher::LaunchOptions& options) {
  auto result = launcher::Launch(options);
  if (!result.ok()) return Fail(result.status(), 1);
  if (result->exit_code != 0) {
    absl::FPrintF(stderr, "dstrain launch: failed: %s\n", result->reason);
    return result->exit_code;
  }
  return 0;
}

int LaunchProgram(int nproc, const std::vector<std::string>& program) {
  launcher::LaunchOptions options;
  options.nproc = nproc;
  options.trainer_argv = program;
  options.rank_env = true;
  return RunLaunch(options);
}

int Launch(const std::vector<std::string>& all_args) {
  // Everything after "--" is a program of the user's and its arguments.
  const auto dashes = std::find(all_args.begin(), all_args.end(), "--");
  const std::vector<std::string> args(all_args.begin(), dashes);
  const std::vector<std::string> program(dashes == all_args.end() ? dashes : dashes + 1,
                                         all_args.end());
  const bool is_program = dashes != all_args.end();
  const char* usage =
      "usage: dstrain launch --nproc N JOB.json | dstrain launch --nproc N -- PROGRAM [ARGS...]";
  auto parsed = flags::ParseArgs(
      args,
      is_program ? std::set<std::string>{"nproc"}
                 : std::set<std::string>{"nproc", "metrics-out", "comm-timeout", "save-model"},
      {});
  if (!parsed.ok()) return Fail(parsed.status(), 2);
  if (!parsed->Has("nproc") || parsed->positional.size() != (is_program ? 0u : 1u) ||
      (is_program && program.empty())) {
    return Fail(absl::InvalidArgumentError(usage), 2);
  }
  auto nproc = parsed->GetInt("nproc", 1);
  if (!nproc.ok()) return Fail(nproc.status(), 2);
  if (*nproc < 1) return Fail(absl::InvalidArgumentError("--nproc must be >= 1"), 2);
  if (is_program) return LaunchProgram(*nproc, program);
  const std::string job = parsed->positional[0];
  // Validate once here, so a bad job fails fast instead of N times.
  auto spec = config::LoadJobSpec(job, *nproc);
  if (!spec.ok()) return Fail(spec.status(), 2);
  if (absl::Status s = CheckDeviceVisible(*spec); !s.ok()) return Fail(s, 2);
  std::fputs(config::NoteLines(spec->no_effect_notes).c_str(), stderr);
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return Fail(absl::InternalError("cannot find the dstrain executable"), 1);
  self[n] = '\0';
  launcher::LaunchOptions options;
  options.nproc = *nproc;
  options.trainer_argv = {self, "train", job, "--no-notes"};
  if (parsed->Has("comm-timeout")) {
    options.trainer_argv.push_back("--comm-timeout");
    options.trainer_argv.push_back(parsed->Get("comm-timeout"));
  }
  for (const char* flag : {"metrics-out", "save-model"}) {
    if (parsed->Has(flag)) {
      options.rank0_extra_args.push_back(absl::StrCat("--", flag));
      options.rank0_extra_args.push_back(parsed->Get(flag));
    }
  }
  return RunLaunch(options);
}

// dstrain token PRINCIPAL ROLES [--append FILE] (docs/security.md, "Tokens").
int Token(const std::vector<std::string>& args) {
  auto parsed = flags::ParseArgs(args, {"append"}, {});
  if (!parsed.ok()) return Fail(parsed.status(), 2);
  if (parsed->positional.size() != 2) {
    return Fail(absl::InvalidArgumentError("usage: dstrain token PRINCIPAL ROLES [--append FILE]"),
                2);
  }
  const std::string& principal = parsed->positional[0];
  if (!coordinator::IsValidPrincipal(principal)) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("principal '", principal,
                                                        "': 1 to 64 characters of [a-z0-9._@-]")),
                2);
  }
  auto roles = coordinator::ParseRoles(parsed->positional[1]);
  if (!roles.ok()) return Fail(roles.status(), 2);
  auto random = crypto::RandomBytes(32);
  if (!random.ok()) return Fail(random.status(), 1);
  const std::string token = absl::StrCat("dst_", absl::BytesToHexString(*random));
  const std::string line = coordinator::TokenFileLine(token, principal, *roles);
  if (parsed->Has("append")) {
    const std::string path = parsed->Get("append");
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
      return Fail(absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno))), 1);
    }
    const std::string text = line + "\n";
    const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    const bool closed = close(fd) == 0;
    if (!written || !closed) {
      return Fail(absl::DataLossError(absl::StrCat(path, ": cannot append the line")), 1);
    }
  } else {
    absl::FPrintF(stderr, "dstrain token: the line for the coordinator's --tokens file:\n%s\n",
                  line);
  }
  absl::PrintF("%s\n", token);
  return 0;
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    PrintUsage(stderr);
    return 2;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "validate") return Validate(args);
  if (command == "prepare") return Prepare(args);
  if (command == "train") return Train(args);
  if (command == "launch") return Launch(args);
  if (command == "estimate") return Estimate(args);
  if (command == "export") return Export(args);
  if (command == "token") return Token(args);
  if (IsServiceCommand(command)) return RunServiceCommand(command, args, ProcessServiceContext());
  if (command == "help" || command == "--help" || command == "-h") {
    PrintUsage(stdout);
    return 0;
  }
  absl::FPrintF(stderr, "dstrain: unknown command '%s'\n\n", command);
  PrintUsage(stderr);
  return 2;
}

}  // namespace
}  // namespace dstrain::cli

int main(int argc, char** argv) {
  dstrain::InitProcess(argv);
  dstrain::tls::KeepOpenSslUntilExit();
  return dstrain::cli::Main(argc, argv);
}
