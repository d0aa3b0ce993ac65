#include "worker/config/config.h"

#include <algorithm>
#include <exception>
#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_macros.h"
#include "worker/config/features.h"
#include "worker/config/keys.h"
#include "worker/config/schema.h"
#include "worker/config/strict_json.h"

namespace dstrain::config {
namespace {

using internal::ClosestKey;
using internal::NormalizeContext;
using nlohmann::json;

template <typename... Args>
absl::Status Error(absl::string_view path, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", args...));
}

// Token ids are stored as uint16 (llm.c's .bin shards, the byte tokenizer's output and the
// engine's token tensors), so a vocabulary may have at most 65536 entries.
constexpr int64_t kMaxVocab = 65536;
// llm.c pads the embedding table to a multiple of 128 (50257 -> 50304) for aligned GEMMs.
constexpr int64_t kVocabPadMultiple = 128;
// A model this large cannot be trained by anything dstrain runs on; above it, a size is a typo.
constexpr double kMaxParams = 1e11;

// DeepSpeed optimizer names that dstrain does not implement (docs/configuration.md, "Optimizer"),
// lower case.
const std::vector<std::string>& UnsupportedDeepSpeedOptimizers() {
  static const auto* const kNames =
      new std::vector<std::string>{"lamb", "onebitadam", "zerooneadam", "onebitlamb", "adagrad",
                                   "lion", "muadam",     "muadamw",     "musgd"};
  return *kNames;
}

// Other names DeepSpeed resolves through torch.optim (getattr, case-sensitive there).
const std::vector<std::string>& TorchOptimizers() {
  static const auto* const kNames = new std::vector<std::string>{
      "SGD",   "RMSprop", "Adadelta", "Adamax",     "ASGD",     "LBFGS",
      "NAdam", "RAdam",   "Rprop",    "SparseAdam", "Adafactor"};
  return *kNames;
}

const std::vector<std::string>& DeepSpeedSchedulers() {
  static const auto* const kNames = new std::vector<std::string>{
      "WarmupLR", "WarmupDecayLR", "WarmupCosineLR", "OneCycle", "LRRangeTest"};
  return *kNames;
}

// Names DeepSpeed resolves through torch.optim.lr_scheduler.
const std::vector<std::string>& TorchSchedulers() {
  static const auto* const kNames = new std::vector<std::string>{
      "LambdaLR",         "MultiplicativeLR", "StepLR",
      "MultiStepLR",      "ConstantLR",       "LinearLR",
      "ExponentialLR",    "PolynomialLR",     "CosineAnnealingLR",
      "ChainedScheduler", "SequentialLR",     "ReduceLROnPlateau",
      "CyclicLR",         "OneCycleLR",       "CosineAnnealingWarmRestarts"};
  return *kNames;
}

bool Contains(const std::vector<std::string>& v, absl::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string ResolvePath(const std::string& base_dir, const std::string& p) {
  if (p.empty()) return p;
  std::filesystem::path path(p);
  if (path.is_absolute() || base_dir.empty()) return path.lexically_normal().string();
  return (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

// The key a path starts with: "zero_optimization" for "zero_optimization.stage: ...".
std::string TopLevelKey(absl::string_view message) {
  const size_t end = message.find_first_of(".[:");
  return std::string(message.substr(0, end));
}

absl::Status MergeDeepSpeedConfig(const std::string& base_dir, json* root, std::string* ds_path,
                                  std::set<std::string>* from_file) {
  auto it = root->find("deepspeed_config");
  if (it == root->end()) return absl::OkStatus();
  if (!it->is_string()) {
    return Error("deepspeed_config", "expected a string (a file path), got ",
                 internal::JsonTypeName(*it));
  }
  const std::string written = it->get<std::string>();
  if (written.empty()) return Error("deepspeed_config", "must not be empty");
  *ds_path = ResolvePath(base_dir, written);
  root->erase(it);

  auto text = internal::ReadFileToString(*ds_path);
  if (!text.ok()) return Error("deepspeed_config", text.status().message());
  auto ds = internal::ParseStrictJson(*text, *ds_path);
  if (!ds.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(ds.status().message(), " (in deepspeed_config \"", *ds_path, "\")"));
  }
  if (!ds->is_object()) {
    return Error("deepspeed_config", "\"", *ds_path, "\" must hold a JSON object, got ",
                 internal::JsonTypeName(*ds));
  }
  for (auto& [key, value] : ds->items()) {
    if (internal::IsJobKey(key)) {
      return Error(key, "belongs in the job file, not in deepspeed_config \"", *ds_path, "\"");
    }
    if (root->contains(key)) {
      return Error(key, "set both in the job file and in deepspeed_config \"", *ds_path,
                   "\"; keep one");
    }
    (*root)[key] = value;
    from_file->insert(key);
  }
  return absl::OkStatus();
}

absl::Status CheckFeatures(const json& e, const NormalizeContext& ctx) {
  // Checked before the per-feature gates so that this conflict is what the user hears about.
  if (e["fp16"]["enabled"].get<bool>() && e["bf16"]["enabled"].get<bool>()) {
    return Error("bf16.enabled", "fp16 and bf16 cannot both be enabled");
  }
  for (const internal::GatedValue& g : ctx.gated) {
    const internal::FeatureSwitch* s = internal::FindFeatureSwitch(g.path);
    if (s == nullptr) {
      return absl::InternalError(
          absl::StrCat(g.path, ": gated key missing from worker/config/features.cc"));
    }
    if (!s->implemented) {
      return Error(g.path, s->feature, " is not supported yet (got ", internal::ShortDump(g.value),
                   ")");
    }
  }
  return absl::OkStatus();
}

absl::Status ResolveZero(json* e, const NormalizeContext& ctx, std::vector<std::string>* notes,
                         ZeroConfig* out) {
  json& z = (*e)["zero_optimization"];
  const int stage = z["stage"].get<int>();
  if (stage > internal::ImplementedMaxZeroStage()) {
    return Error("zero_optimization.stage", "ZeRO stage ", stage,
                 " is not implemented yet (implemented: 0..", internal::ImplementedMaxZeroStage(),
                 ")");
  }
  // DeepSpeed migrates the deprecated spelling and rejects it next to its replacement.
  if (!z["stage3_gather_fp16_weights_on_model_save"].is_null()) {
    if (ctx.given.count("zero_optimization.stage3_gather_16bit_weights_on_model_save")) {
      return Error("zero_optimization.stage3_gather_fp16_weights_on_model_save",
                   "deprecated spelling given together with its replacement "
                   "stage3_gather_16bit_weights_on_model_save");
    }
    z["stage3_gather_16bit_weights_on_model_save"] = z["stage3_gather_fp16_weights_on_model_save"];
    notes->push_back(
        "zero_optimization.stage3_gather_fp16_weights_on_model_save: deprecated, read as "
        "stage3_gather_16bit_weights_on_model_save");
  }
  for (const char* deprecated : {"cpu_offload", "cpu_offload_param"}) {
    const std::string replacement =
        std::string(deprecated) == "cpu_offload" ? "offload_optimizer" : "offload_param";
    if (!z[deprecated].is_null() && !z[replacement].is_null()) {
      return Error(absl::StrCat("zero_optimization.", deprecated),
                   "deprecated key given together with its replacement zero_optimization.",
                   replacement);
    }
  }
  if (!z["cpu_offload_use_pin_memory"].is_null() && !z["offload_optimizer"].is_null()) {
    return Error("zero_optimization.cpu_offload_use_pin_memory",
                 "deprecated key given together with its replacement "
                 "zero_optimization.offload_optimizer.pin_memory");
  }
  for (auto it = z.begin(); it != z.end();) {
    it = internal::IsDeprecatedZeroKey(it.key()) ? z.erase(it) : std::next(it);
  }
  if (z["overlap_comm"].is_null()) z["overlap_comm"] = stage == 3;

  out->stage = stage;
  out->contiguous_gradients = z["contiguous_gradients"].get<bool>();
  out->reduce_scatter = z["reduce_scatter"].get<bool>();
  out->reduce_bucket_size = z["reduce_bucket_size"].get<int64_t>();
  out->allgather_bucket_size = z["allgather_bucket_size"].get<int64_t>();
  out->allgather_partitions = z["allgather_partitions"].get<bool>();
  out->overlap_comm = z["overlap_comm"].get<bool>();
  out->sub_group_size = z["sub_group_size"].get<int64_t>();
  out->prefetch_bucket_size = z["stage3_prefetch_bucket_size"].get<int64_t>();
  out->param_persistence_threshold = z["stage3_param_persistence_threshold"].get<int64_t>();
  out->model_persistence_threshold = z["stage3_model_persistence_threshold"].get<int64_t>();
  out->max_live_parameters = z["stage3_max_live_parameters"].get<int64_t>();
  out->max_reuse_distance = z["stage3_max_reuse_distance"].get<int64_t>();
  out->gather_16bit_weights_on_model_save =
      z["stage3_gather_16bit_weights_on_model_save"].get<bool>();
  out->ignore_unused_parameters = z["ignore_unused_parameters"].get<bool>();
  out->round_robin_gradients = z["round_robin_gradients"].get<bool>();
  return absl::OkStatus();
}

absl::Status ResolveParallelism(const json& e, JobSpec* spec) {
  const json& job = e["job"];
  const int world = job["world_size"].get<int>();
  const int stages = job["pipeline_stages"].get<int>();
  if (world % stages != 0) {
    return Error("job.pipeline_stages", "must divide job.world_size (", world, " % ", stages,
                 " != 0)");
  }
  const json& ds_stages = e["pipeline"]["stages"];
  if (ds_stages.is_string()) {
    if (ds_stages.get<std::string>() != "auto") {
      return Error("pipeline.stages", "expected \"auto\" or an integer, got ",
                   internal::ShortDump(ds_stages));
    }
  } else if (ds_stages.is_number_integer()) {
    if (ds_stages.get<int64_t>() != stages) {
      return Error("pipeline.stages", ds_stages.get<int64_t>(), " != job.pipeline_stages ", stages,
                   " (job.pipeline_stages decides; omit pipeline.stages or make them equal)");
    }
  } else {
    return Error("pipeline.stages", "expected \"auto\" or an integer, got ",
                 internal::JsonTypeName(ds_stages));
  }
  spec->data_parallel_size = world / stages;
  return absl::OkStatus();
}

std::optional<int64_t> OptionalInt(const json& v) {
  if (v.is_null()) return std::nullopt;
  return v.get<int64_t>();
}

// DeepSpeed's _set_batch_related_parameters + _batch_assertion (docs/job-file.md, "Batch size"),
// with the data-parallel size as world size. Integer division can truncate an inferred value; the
// final product check reports that, naming how the value was inferred.
absl::Status ResolveBatch(json* e, int64_t dp, JobSpec* spec) {
  std::optional<int64_t> tb = OptionalInt((*e)["train_batch_size"]);
  std::optional<int64_t> mb = OptionalInt((*e)["train_micro_batch_size_per_gpu"]);
  std::optional<int64_t> gas = OptionalInt((*e)["gradient_accumulation_steps"]);
  std::string inferred_key, how;
  if (tb && mb && gas) {
    // Nothing to infer.
  } else if (tb && mb) {
    gas = *tb / *mb / dp;
    inferred_key = "gradient_accumulation_steps";
    how = absl::StrCat("train_batch_size ", *tb, " // train_micro_batch_size_per_gpu ", *mb,
                       " // data-parallel size ", dp);
  } else if (tb && gas) {
    mb = *tb / dp / *gas;
    inferred_key = "train_micro_batch_size_per_gpu";
    how = absl::StrCat("train_batch_size ", *tb, " // data-parallel size ", dp,
                       " // gradient_accumulation_steps ", *gas);
  } else if (mb && gas) {
    int64_t product = 0;
    if (__builtin_mul_overflow(*mb, *gas, &product) ||
        __builtin_mul_overflow(product, dp, &product)) {
      return Error("train_batch_size", "train_micro_batch_size_per_gpu ", *mb,
                   " * gradient_accumulation_steps ", *gas, " * data-parallel size ", dp,
                   " overflows");
    }
    tb = product;
  } else if (tb) {
    gas = 1;
    mb = *tb / dp;
    inferred_key = "train_micro_batch_size_per_gpu";
    how = absl::StrCat("train_batch_size ", *tb, " // data-parallel size ", dp);
  } else if (mb) {
    gas = 1;
    int64_t product = 0;
    if (__builtin_mul_overflow(*mb, dp, &product)) {
      return Error("train_batch_size", "train_micro_batch_size_per_gpu ", *mb,
                   " * data-parallel size ", dp, " overflows");
    }
    tb = product;
  } else {
    return Error("train_batch_size",
                 "either train_batch_size or train_micro_batch_size_per_gpu must be given",
                 gas ? " (gradient_accumulation_steps alone does not determine the batch)" : "");
  }
  // DeepSpeed asserts each value > 0 before the product rule.
  if (*mb < 1) {
    return Error("train_micro_batch_size_per_gpu", "inferred as ", *mb, " (", how,
                 "); must be >= 1");
  }
  if (*gas < 1) {
    return Error("gradient_accumulation_steps", "inferred as ", *gas, " (", how, "); must be >= 1");
  }
  int64_t product = 0;
  const bool overflow =
      __builtin_mul_overflow(*mb, *gas, &product) || __builtin_mul_overflow(product, dp, &product);
  if (overflow || product != *tb) {
    auto mark = [&](const std::string& key) {
      return key == inferred_key ? std::string(" (inferred)") : std::string();
    };
    std::string message =
        absl::StrCat(*tb, " != train_micro_batch_size_per_gpu ", *mb,
                     mark("train_micro_batch_size_per_gpu"), " * gradient_accumulation_steps ",
                     *gas, mark("gradient_accumulation_steps"), " * data-parallel size ", dp);
    if (!inferred_key.empty()) {
      absl::StrAppend(&message, "; ", inferred_key, " was inferred as ", how,
                      ", which integer division truncated");
    }
    return Error("train_batch_size", message);
  }
  (*e)["train_batch_size"] = *tb;
  (*e)["train_micro_batch_size_per_gpu"] = *mb;
  (*e)["gradient_accumulation_steps"] = *gas;
  spec->train_batch_size = *tb;
  spec->train_micro_batch_size_per_gpu = *mb;
  spec->gradient_accumulation_steps = *gas;
  return absl::OkStatus();
}

absl::Status ResolveOptimizer(json* e, NormalizeContext* ctx, std::vector<std::string>* notes,
                              OptimizerConfig* out) {
  json& opt = (*e)["optimizer"];
  if (opt.is_null()) {
    opt = json{{"type", "AdamW"}, {"params", json::object()}, {"legacy_fusion", false}};
    notes->push_back(
        "optimizer: not given; dstrain uses AdamW with DeepSpeed FusedAdam's defaults (DeepSpeed "
        "itself would need an optimizer from the client)");
  }
  const std::string type = opt["type"].get<std::string>();
  const std::string lower = absl::AsciiStrToLower(type);
  if (lower != "adam" && lower != "adamw") {
    if (Contains(UnsupportedDeepSpeedOptimizers(), lower)) {
      return Error("optimizer.type", "\"", type,
                   "\" is not supported yet (dstrain implements Adam and AdamW)");
    }
    for (const std::string& name : TorchOptimizers()) {
      if (absl::AsciiStrToLower(name) == lower) {
        return Error("optimizer.type", "torch.optim.", name,
                     " is not supported yet (dstrain implements Adam and AdamW)");
      }
    }
    std::vector<std::string> known = {"Adam", "AdamW"};
    std::string message = absl::StrCat("unknown optimizer type \"", type, "\"");
    const std::string close = ClosestKey(type, known);
    if (!close.empty()) absl::StrAppend(&message, " (did you mean \"", close, "\"?)");
    return Error("optimizer.type", message);
  }

  json params_in = opt["params"];
  if (params_in.is_null()) params_in = json::object();
  json params;
  DT_RETURN_IF_ERROR(internal::Normalize(params_in, internal::AdamParamsSchema(),
                                         "optimizer.params", ctx, &params));
  const json& betas = params["betas"];
  if (betas.size() != 2) {
    return Error("optimizer.params.betas", "expected 2 values, got ", betas.size());
  }
  for (size_t i = 0; i < 2; ++i) {
    const double b = betas[i].get<double>();
    if (!(b >= 0.0 && b < 1.0)) {
      return Error(internal::IndexPath("optimizer.params.betas", i), "must be in [0, 1), got ", b);
    }
  }
  if (!(params["eps"].get<double>() > 0.0)) {
    return Error("optimizer.params.eps", "must be > 0, got ", params["eps"].get<double>());
  }
  if (params["amsgrad"].get<bool>()) {
    return Error("optimizer.params.amsgrad",
                 "AMSGrad is not supported (DeepSpeed's FusedAdam raises on it too)");
  }
  if (params["torch_adam"].get<bool>()) {
    notes->push_back(
        "optimizer.params.torch_adam: no effect; dstrain's Adam kernel computes the same update "
        "as torch.optim.Adam/AdamW");
  }
  if (!params["max_grad_norm"].is_null()) {
    notes->push_back(
        "optimizer.params.max_grad_norm: ignored (DeepSpeed zeroes it in fp32 training); "
        "gradient_clipping clips gradients");
  }
  const bool given_mode = params["adam_w_mode"].get<bool>();
  const bool effective_mode = lower == "adamw" || given_mode;  // DeepSpeed engine.py's rule
  if (lower == "adamw" && !given_mode) {
    notes->push_back(
        "optimizer.params.adam_w_mode: false has no effect with type AdamW (DeepSpeed's rule); "
        "use type Adam with adam_w_mode false for L2-style weight decay");
  }
  if (lower == "adam" && !ctx->given.count("optimizer.params.adam_w_mode")) {
    notes->push_back(
        "optimizer.type: \"Adam\" runs AdamW (decoupled weight decay) because "
        "params.adam_w_mode defaults to true (DeepSpeed's rule)");
  }
  params["adam_w_mode"] = effective_mode;
  opt["params"] = params;

  out->type = type;
  out->lr = params["lr"].get<double>();
  out->beta1 = betas[0].get<double>();
  out->beta2 = betas[1].get<double>();
  out->eps = params["eps"].get<double>();
  out->weight_decay = params["weight_decay"].get<double>();
  out->adam_w_mode = effective_mode;
  out->bias_correction = params["bias_correction"].get<bool>();
  return absl::OkStatus();
}

// scheduler.params for `type`: DeepSpeed's defaults filled, cross-field rules checked.
absl::StatusOr<json> ResolveSchedulerParams(const std::string& type, const json& params_in,
                                            NormalizeContext* ctx) {
  const internal::Block* schema = internal::SchedulerParamsSchema(type);
  if (schema == nullptr) {
    if (Contains(TorchSchedulers(), type)) {
      return Error("scheduler.type", "torch.optim.lr_scheduler.", type,
                   " is not supported yet (dstrain implements DeepSpeed's WarmupLR, "
                   "WarmupDecayLR, WarmupCosineLR, OneCycle and LRRangeTest)");
    }
    std::string message = absl::StrCat("unknown scheduler type \"", type, "\"");
    const std::string close = ClosestKey(type, DeepSpeedSchedulers());
    if (!close.empty()) absl::StrAppend(&message, " (did you mean \"", close, "\"?)");
    return Error("scheduler.type", message);
  }
  if (!params_in.is_null() && !params_in.is_object()) {
    return Error("scheduler.params", "expected an object, got ", internal::JsonTypeName(params_in));
  }
  json p;
  DT_RETURN_IF_ERROR(internal::Normalize(params_in.is_null() ? json::object() : params_in, *schema,
                                         "scheduler.params", ctx, &p));
  const std::string kParams = "scheduler.params.";
  if (type == "WarmupDecayLR" || type == "WarmupCosineLR") {
    // DeepSpeed runs max(2, warmup_num_steps) warmup steps.
    const int64_t warmup = std::max<int64_t>(2, p["warmup_num_steps"].get<int64_t>());
    const int64_t total = p["total_num_steps"].get<int64_t>();
    if (type == "WarmupDecayLR" && total < warmup) {
      return Error(kParams + "total_num_steps", "must be >= warmup_num_steps ", warmup, ", got ",
                   total);
    }
    if (type == "WarmupCosineLR" && total <= warmup) {
      // DeepSpeed divides by total_num_steps - warmup_num_steps.
      return Error(kParams + "total_num_steps", "must be > warmup_num_steps ", warmup, ", got ",
                   total);
    }
  } else if (type == "OneCycle") {
    if (p["cycle_second_step_size"].is_null()) {
      p["cycle_second_step_size"] = p["cycle_first_step_size"];
    }
    if (p["cycle_second_stair_count"].is_null()) {
      p["cycle_second_stair_count"] = p["cycle_first_stair_count"];
    }
    for (const char* key : {"cycle_min_mom", "cycle_max_mom"}) {
      if (!(p[key].get<double>() < 1.0)) {
        return Error(kParams + key, "must be < 1 (it becomes Adam's beta1), got ",
                     p[key].get<double>());
      }
    }
  }
  return p;
}

// Remarks about a valid scheduler block in the context of the whole job.
void NoteScheduler(const SchedulerConfig& s, const json& e, const NormalizeContext& ctx,
                   std::vector<std::string>* notes) {
  const json& p = s.params;
  const std::string kParams = "scheduler.params.";
  if (s.type == "WarmupLR" || s.type == "WarmupDecayLR" || s.type == "WarmupCosineLR") {
    const int64_t n = p["warmup_num_steps"].get<int64_t>();
    if (n < 2) {
      notes->push_back(absl::StrCat(kParams, "warmup_num_steps: ", n,
                                    " acts as 2 (DeepSpeed uses max(2, warmup_num_steps))"));
    }
  }
  if (s.type == "WarmupDecayLR" || s.type == "WarmupCosineLR") {
    const int64_t total = p["total_num_steps"].get<int64_t>();
    const int64_t train_steps = e["job"]["train_steps"].get<int64_t>();
    if (train_steps > total) {
      notes->push_back(absl::StrCat(
          kParams, "total_num_steps: ", total, " < job.train_steps ", train_steps,
          s.type == "WarmupDecayLR"
              ? "; the learning rate is 0 after total_num_steps"
              : "; past total_num_steps DeepSpeed's cosine rises again (it is not clamped)"));
    }
  }
  if (s.type == "OneCycle" && p["cycle_momentum"].get<bool>()) {
    notes->push_back(
        "scheduler: OneCycle with cycle_momentum cycles Adam's beta1 inversely to the lr and "
        "sets beta2 to 0.99 (DeepSpeed's behaviour; optimizer.params.betas[1] is not used)");
  }
  // These schedules set the learning rate themselves; WarmupCosineLR scales the optimizer's.
  if (!s.type.empty() && s.type != "WarmupCosineLR" && ctx.given.count("optimizer.params.lr")) {
    notes->push_back(absl::StrCat("optimizer.params.lr: not used; the ", s.type,
                                  " schedule sets the learning rate (DeepSpeed's behaviour)"));
  }
}

absl::Status ResolveScheduler(json* e, NormalizeContext* ctx, std::vector<std::string>* notes,
                              SchedulerConfig* out) {
  json& s = (*e)["scheduler"];
  if (s.is_null()) {
    out->type.clear();
    out->params = json::object();
    return absl::OkStatus();
  }
  const std::string type = s["type"].get<std::string>();
  DT_ASSIGN_OR_RETURN(json p, ResolveSchedulerParams(type, s["params"], ctx));
  s["params"] = p;
  out->type = type;
  out->params = std::move(p);
  NoteScheduler(*out, *e, *ctx, notes);
  return absl::OkStatus();
}

absl::Status ResolveModel(json* e, const std::string& base_dir, ModelConfig* out) {
  json& m = (*e)["model"];
  const int64_t n_layer = m["n_layer"].get<int64_t>();
  const int64_t n_head = m["n_head"].get<int64_t>();
  const int64_t n_embd = m["n_embd"].get<int64_t>();
  const int64_t vocab = m["vocab_size"].get<int64_t>();
  const int64_t block = m["block_size"].get<int64_t>();
  if (n_embd % n_head != 0) {
    return Error("model.n_head", "must divide model.n_embd (", n_embd, " % ", n_head, " != 0)");
  }
  if (vocab > kMaxVocab) {
    return Error("model.vocab_size", "must be <= ", kMaxVocab,
                 " (token ids are stored as uint16), got ", vocab);
  }
  int64_t padded = 0;
  if (m["padded_vocab_size"].is_null()) {
    padded = (vocab + kVocabPadMultiple - 1) / kVocabPadMultiple * kVocabPadMultiple;
    m["padded_vocab_size"] = padded;
  } else {
    padded = m["padded_vocab_size"].get<int64_t>();
    if (padded < vocab) {
      return Error("model.padded_vocab_size", "must be >= model.vocab_size ", vocab, ", got ",
                   padded);
    }
  }
  // GPT-2 parameter count (llm.c): embeddings + per layer 12·C² + 13·C + final layer norm.
  const double c = static_cast<double>(n_embd);
  const double params = static_cast<double>(padded) * c + static_cast<double>(block) * c +
                        static_cast<double>(n_layer) * (12.0 * c * c + 13.0 * c) + 2.0 * c;
  if (params > kMaxParams) {
    return Error("model", "about ", absl::StrFormat("%.3g", params),
                 " parameters; dstrain rejects models above 1e11 parameters (n_layer ", n_layer,
                 ", n_embd ", n_embd, ", padded_vocab_size ", padded, ", block_size ", block, ")");
  }
  m["init_from"] = ResolvePath(base_dir, m["init_from"].get<std::string>());

  out->type = m["type"].get<std::string>();
  out->n_layer = static_cast<int>(n_layer);
  out->n_head = static_cast<int>(n_head);
  out->n_embd = static_cast<int>(n_embd);
  out->vocab_size = static_cast<int>(vocab);
  out->block_size = static_cast<int>(block);
  out->padded_vocab_size = static_cast<int>(padded);
  out->init_seed = static_cast<uint64_t>(m["init_seed"].get<int64_t>());
  out->init_from = m["init_from"].get<std::string>();
  return absl::OkStatus();
}

bool IsTextPath(const std::string& p) { return absl::EndsWith(p, ".txt"); }

absl::Status ResolveData(json* e, const std::string& base_dir, const ModelConfig& model,
                         DataConfig* out) {
  json& d = (*e)["data"];
  const std::string train = d["train"].get<std::string>();
  const std::string val = d["val"].get<std::string>();
  if (train.empty()) return Error("data.train", "must not be empty");
  if (!val.empty() && IsTextPath(val) != IsTextPath(train)) {
    return Error("data.val", "must be the same kind as data.train (a .txt file or .bin shards)");
  }
  if (IsTextPath(train) && model.vocab_size < 256) {
    return Error("model.vocab_size",
                 "must be >= 256 for byte-level text (data.train is a .txt "
                 "file), got ",
                 model.vocab_size);
  }
  if (d["seq_len"].is_null()) d["seq_len"] = model.block_size;
  const int64_t seq_len = d["seq_len"].get<int64_t>();
  if (seq_len > model.block_size) {
    return Error("data.seq_len", "must be <= model.block_size ", model.block_size, ", got ",
                 seq_len);
  }
  d["train"] = ResolvePath(base_dir, train);
  d["val"] = ResolvePath(base_dir, val);

  out->train = d["train"].get<std::string>();
  out->val = d["val"].get<std::string>();
  out->seq_len = static_cast<int>(seq_len);
  out->seed = static_cast<uint64_t>(d["seed"].get<int64_t>());
  out->shuffle = d["shuffle"].get<bool>();
  return absl::OkStatus();
}

absl::Status ResolveJob(json* e, const std::string& base_dir, const std::string& default_name,
                        JobConfig* out) {
  json& j = (*e)["job"];
  if (j["name"].get<std::string>().empty()) j["name"] = default_name;
  if (j["checkpoint_every"].get<int64_t>() > 0 && j["checkpoint_dir"].get<std::string>().empty()) {
    return Error("job.checkpoint_every", "needs job.checkpoint_dir");
  }
  if (j["sample_every"].get<int64_t>() > 0 && j["sample_tokens"].get<int64_t>() == 0) {
    return Error("job.sample_tokens", "must be > 0 when job.sample_every is set");
  }
  j["checkpoint_dir"] = ResolvePath(base_dir, j["checkpoint_dir"].get<std::string>());

  out->name = j["name"].get<std::string>();
  out->world_size = j["world_size"].get<int>();
  out->pipeline_stages = j["pipeline_stages"].get<int>();
  out->train_steps = j["train_steps"].get<int64_t>();
  out->checkpoint_dir = j["checkpoint_dir"].get<std::string>();
  out->checkpoint_every = j["checkpoint_every"].get<int64_t>();
  out->keep_last = j["keep_last"].get<int>();
  out->max_restarts = j["max_restarts"].get<int>();
  out->comm_timeout_s = j["comm_timeout"].get<double>();
  out->resume = j["resume"].get<bool>();
  out->eval_every = j["eval_every"].get<int64_t>();
  out->eval_batches = j["eval_batches"].get<int>();
  out->sample_every = j["sample_every"].get<int64_t>();
  out->sample_tokens = j["sample_tokens"].get<int>();
  return absl::OkStatus();
}

void FillPrecision(json* effective, const NormalizeContext& ctx, std::vector<std::string>* notes,
                   JobSpec* spec) {
  json& e = *effective;
  json& f = e["fp16"];
  Fp16Config& fp16 = spec->fp16;
  fp16.enabled = f["enabled"].get<bool>();
  fp16.auto_cast = f["auto_cast"].get<bool>();
  fp16.loss_scale = f["loss_scale"].get<double>();
  fp16.initial_scale_power = f["initial_scale_power"].get<int>();
  fp16.loss_scale_window = f["loss_scale_window"].get<int64_t>();
  fp16.hysteresis = f["hysteresis"].get<int>();
  fp16.consecutive_hysteresis = f["consecutive_hysteresis"].get<bool>();
  fp16.min_loss_scale = f["min_loss_scale"].get<double>();
  fp16.fp16_master_weights_and_grads = f["fp16_master_weights_and_grads"].get<bool>();
  bool any_dynamic = false;
  for (const char* key : {"initial_scale_power", "loss_scale_window", "min_loss_scale",
                          "hysteresis", "consecutive_hysteresis"}) {
    any_dynamic |= ctx.given.count(absl::StrCat("fp16.", key)) > 0;
  }
  fp16.dynamic_loss_args_given = fp16.enabled && any_dynamic;
  // DeepSpeed's ZeRO path passes the dynamic keys to its scaler only when one of them is given;
  // otherwise DynamicLossScaler() starts at 2^32 with hysteresis 1 (its window, floor and
  // consecutive_hysteresis defaults equal the config's). The spec and the effective config show
  // that scaler, so the printed config parses back to the same behaviour.
  if (fp16.enabled && !any_dynamic && fp16.loss_scale == 0.0) {
    fp16.initial_scale_power = 32;
    fp16.hysteresis = 1;
    f["initial_scale_power"] = 32;
    f["hysteresis"] = 1;
    notes->push_back(
        "fp16: no dynamic loss-scale key given, so the scaler starts at 2^32 with hysteresis 1 "
        "(DeepSpeed's ZeRO path; its docs say 2^16 and 2)");
  }
  spec->bf16.enabled = e["bf16"]["enabled"].get<bool>();
  spec->bf16.immediate_grad_update = e["bf16"]["immediate_grad_update"].get<bool>();
}

absl::StatusOr<JobSpec> ParseImpl(absl::string_view text, absl::string_view source,
                                  const std::string& base_dir,
                                  std::optional<int> world_size_override,
                                  const std::string& default_name, std::string* ds_path,
                                  std::set<std::string>* from_file) {
  DT_ASSIGN_OR_RETURN(json root, internal::ParseStrictJson(text, source));
  if (!root.is_object()) {
    return Error(source, "expected a JSON object at the top level, got ",
                 internal::JsonTypeName(root));
  }
  DT_RETURN_IF_ERROR(MergeDeepSpeedConfig(base_dir, &root, ds_path, from_file));
  // DeepSpeed still accepts `"zero_optimization": true` as stage 1 (false: stage 0).
  if (auto it = root.find("zero_optimization"); it != root.end() && it->is_boolean()) {
    *it = json{{"stage", it->get<bool>() ? 1 : 0}};
  }
  if (world_size_override) {
    if (auto it = root.find("job"); it != root.end() && it->is_object()) {
      (*it)["world_size"] = *world_size_override;
    }
  }

  NormalizeContext ctx;
  ctx.root = &internal::JobFileSchema();
  json e;
  DT_RETURN_IF_ERROR(internal::Normalize(root, internal::JobFileSchema(), "", &ctx, &e));
  DT_RETURN_IF_ERROR(CheckFeatures(e, ctx));

  JobSpec spec;
  std::vector<std::string>& notes = spec.notes;
  if (!ds_path->empty()) {
    notes.push_back(absl::StrCat("deepspeed_config: DeepSpeed keys read from \"", *ds_path,
                                 "\" and merged here"));
  }
  DT_RETURN_IF_ERROR(ResolveZero(&e, ctx, &notes, &spec.zero));
  DT_RETURN_IF_ERROR(ResolveParallelism(e, &spec));
  DT_RETURN_IF_ERROR(ResolveBatch(&e, spec.data_parallel_size, &spec));
  DT_RETURN_IF_ERROR(ResolveOptimizer(&e, &ctx, &notes, &spec.optimizer));
  DT_RETURN_IF_ERROR(ResolveScheduler(&e, &ctx, &notes, &spec.scheduler));
  DT_RETURN_IF_ERROR(ResolveModel(&e, base_dir, &spec.model));
  DT_RETURN_IF_ERROR(ResolveData(&e, base_dir, spec.model, &spec.data));
  DT_RETURN_IF_ERROR(ResolveJob(&e, base_dir, default_name, &spec.job));
  FillPrecision(&e, ctx, &notes, &spec);

  spec.gradient_clipping = e["gradient_clipping"].get<double>();
  spec.prescale_gradients = e["prescale_gradients"].get<bool>();
  spec.gradient_predivide_factor = e["gradient_predivide_factor"].get<double>();
  if (!(spec.gradient_predivide_factor > 0)) {
    return Error("gradient_predivide_factor", "must be > 0, got ", spec.gradient_predivide_factor);
  }
  if (e["communication_data_type"].is_null()) {
    spec.communication_data_type = PrecisionName(spec);
    e["communication_data_type"] = spec.communication_data_type;
  } else {
    spec.communication_data_type = e["communication_data_type"].get<std::string>();
    const std::string storage = PrecisionName(spec);
    if (spec.communication_data_type != "fp32" && storage != "fp32" &&
        spec.communication_data_type != storage) {
      return Error("communication_data_type", "\"", spec.communication_data_type, "\" with ",
                   storage, " training is not supported (use \"", storage, "\" or \"fp32\")");
    }
  }
  spec.steps_per_print = OptionalInt(e["steps_per_print"]);
  if (!ctx.given.count("gradient_clipping")) {
    notes.push_back("gradient_clipping: 0 (off), DeepSpeed's code default; its docs say 1.0");
  }
  e["notes"] = notes;
  spec.effective = std::move(e);
  return spec;
}

absl::StatusOr<JobSpec> ParseWithSource(absl::string_view text, absl::string_view source,
                                        const std::string& base_dir,
                                        std::optional<int> world_size_override,
                                        const std::string& default_name) {
  std::string ds_path;
  std::set<std::string> from_file;
  absl::StatusOr<JobSpec> spec;
  try {
    spec =
        ParseImpl(text, source, base_dir, world_size_override, default_name, &ds_path, &from_file);
  } catch (const std::exception& ex) {
    // nlohmann throws on misuse only; every value is type-checked before it is read.
    return absl::InternalError(absl::StrCat("config: unexpected exception: ", ex.what()));
  }
  if (!spec.ok() && spec.status().code() == absl::StatusCode::kInvalidArgument &&
      from_file.count(TopLevelKey(spec.status().message()))) {
    return absl::InvalidArgumentError(
        absl::StrCat(spec.status().message(), " (from deepspeed_config \"", ds_path, "\")"));
  }
  return spec;
}

}  // namespace

absl::StatusOr<JobSpec> ParseJobSpec(std::string_view json_text, const std::string& base_dir,
                                     std::optional<int> world_size_override) {
  return ParseWithSource(absl::string_view(json_text.data(), json_text.size()), "job", base_dir,
                         world_size_override, "");
}

absl::StatusOr<SchedulerConfig> ResolveSchedulerConfig(std::string_view type, const json& params) {
  SchedulerConfig out;
  out.type = std::string(type);
  if (out.type.empty()) return out;
  NormalizeContext ctx;
  try {
    DT_ASSIGN_OR_RETURN(out.params, ResolveSchedulerParams(out.type, params, &ctx));
  } catch (const std::exception& ex) {
    return absl::InternalError(absl::StrCat("config: unexpected exception: ", ex.what()));
  }
  return out;
}

absl::StatusOr<JobSpec> LoadJobSpec(const std::string& path,
                                    std::optional<int> world_size_override) {
  DT_ASSIGN_OR_RETURN(std::string text, internal::ReadFileToString(path));
  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  if (ec) absolute = path;
  const std::string base_dir = absolute.parent_path().lexically_normal().string();
  return ParseWithSource(text, path, base_dir, world_size_override,
                         std::filesystem::path(path).stem().string());
}

const char* PrecisionName(const JobSpec& spec) {
  return spec.fp16.enabled ? "fp16" : (spec.bf16.enabled ? "bf16" : "fp32");
}

}  // namespace dstrain::config
