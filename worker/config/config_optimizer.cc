// ParseJobSpec's steps for the optimizer and scheduler blocks (docs/configuration.md,
// "Optimizer"): Adam and AdamW with FusedAdam's defaults and DeepSpeed's adam_w_mode rule;
// DeepSpeed's five schedulers with their defaults and cross-field rules. Other DeepSpeed and torch
// names are rejected as not supported yet, unknown ones with a "did you mean".
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/config/keys.h"
#include "worker/config/resolve.h"
#include "worker/config/strict_json.h"

namespace dstrain::config::internal {
namespace {

using nlohmann::json;

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

}  // namespace

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
    const std::string close = ClosestKey(type, internal::SchedulerTypes());
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

}  // namespace dstrain::config::internal
