#include "worker/config/config.h"

#include <exception>
#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/config/features.h"
#include "worker/config/key_effects.h"
#include "worker/config/keys.h"
#include "worker/config/resolve.h"
#include "worker/config/schema.h"
#include "worker/config/strict_json.h"

namespace dstrain::config {
namespace {

using internal::Error;
using internal::NormalizeContext;
using nlohmann::json;

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
  *ds_path = internal::ResolvePath(base_dir, written);
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

// The notes of the kNoEffect keys the input sets (config.h, JobSpec::no_effect_notes), in key
// path order. An input with a `notes` list is an effective configuration, which writes every
// key: there a key at DeepSpeed's default counts as set only when `input_notes` hold its note.
std::vector<std::string> NoEffectNotes(const NormalizeContext& ctx, const json& input_notes) {
  const bool effective_input = ctx.given.count("notes") > 0;
  std::vector<std::string> out;
  for (const std::string& path : ctx.given) {
    const internal::KeyEffectRow* row = internal::FindKeyEffect(path);
    if (row == nullptr || row->effect != internal::KeyEffect::kNoEffect) continue;
    std::string note = internal::NoEffectNote(path, *row);
    if (effective_input && ctx.at_default.count(path)) {
      const std::string prefix = absl::StrCat(path, ": no effect in dstrain:");
      bool noted = false;
      for (const json& n : input_notes) noted |= absl::StartsWith(n.get<std::string>(), prefix);
      if (!noted) continue;
    }
    out.push_back(std::move(note));
  }
  return out;
}

// The zero_optimization block when its deprecated boolean `key` is true and `replacement` is
// absent (a migration is due), else null.
json* DeprecatedSwitchOn(json* root, const char* key, const char* replacement) {
  const auto z = root->find("zero_optimization");
  if (z == root->end() || !z->is_object()) return nullptr;
  const auto on = z->find(key);
  if (on == z->end() || !on->is_boolean() || !on->get<bool>()) return nullptr;
  if (const auto r = z->find(replacement); r != z->end() && !r->is_null()) return nullptr;
  return &*z;
}

// DeepSpeed's deprecated `zero_optimization.cpu_offload: true` (with cpu_offload_use_pin_memory)
// is offload_optimizer {"device": "cpu", "pin_memory": ...}, as DeepSpeed migrates it; read so
// before the schema fills offload_optimizer's defaults. Left alone beside an offload_optimizer
// block (ResolveZero refuses the pair). Returns the note to give, or "".
std::string MigrateCpuOffload(json* root) {
  json* const z = DeprecatedSwitchOn(root, "cpu_offload", "offload_optimizer");
  if (z == nullptr) return "";
  json offload = {{"device", "cpu"}};
  std::string note =
      "zero_optimization.cpu_offload: deprecated, read as offload_optimizer {\"device\": \"cpu\"";
  if (const auto pin = z->find("cpu_offload_use_pin_memory");
      pin != z->end() && pin->is_boolean()) {
    offload["pin_memory"] = *pin;
    absl::StrAppend(&note, ", \"pin_memory\": ", pin->get<bool>() ? "true" : "false");
    z->erase(pin);
  }
  z->erase("cpu_offload");
  (*z)["offload_optimizer"] = std::move(offload);
  return absl::StrCat(note, "}");
}

// DeepSpeed's deprecated `zero_optimization.cpu_offload_param: true` is offload_param
// {"device": "cpu"}, as DeepSpeed migrates it. Left alone beside an offload_param block
// (ResolveZero refuses the pair). Returns the note to give, or "".
std::string MigrateCpuOffloadParam(json* root) {
  json* const z = DeprecatedSwitchOn(root, "cpu_offload_param", "offload_param");
  if (z == nullptr) return "";
  z->erase("cpu_offload_param");
  (*z)["offload_param"] = json{{"device", "cpu"}};
  return "zero_optimization.cpu_offload_param: deprecated, read as offload_param {\"device\": "
         "\"cpu\"}";
}

// `library_world`: parse a DeepSpeed config alone for dstrain::Initialize (config.h,
// ParseDeepSpeedConfig) with that world size; nullopt: a job file.
absl::StatusOr<JobSpec> ParseImpl(absl::string_view text, absl::string_view source,
                                  const std::string& base_dir,
                                  std::optional<int> world_size_override,
                                  const std::string& default_name, std::string* ds_path,
                                  std::set<std::string>* from_file,
                                  std::optional<int> library_world = std::nullopt) {
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
  const std::string migrated = MigrateCpuOffload(&root);
  const std::string migrated_param = MigrateCpuOffloadParam(&root);
  if (world_size_override) {
    if (auto it = root.find("job"); it != root.end() && it->is_object()) {
      (*it)["world_size"] = *world_size_override;
    }
  }

  if (library_world) {
    // The module is the model and the program runs the loop: dstrain's own blocks have nothing
    // to say here, and a job file passed by mistake should not half-apply.
    for (const char* key : {"model", "data", "job"}) {
      if (root.contains(key)) {
        return Error(key,
                     "a job file's block, not read by dstrain::Initialize (the module declares "
                     "the model and the program feeds the batches); pass the DeepSpeed config "
                     "alone");
      }
    }
  }
  const internal::Block& schema =
      library_world ? internal::DeepSpeedConfigSchema() : internal::JobFileSchema();
  NormalizeContext ctx;
  ctx.root = &schema;
  json e;
  DT_RETURN_IF_ERROR(internal::Normalize(root, schema, "", &ctx, &e));
  if (library_world) {
    // The steps below read the world size (and a train_steps, for a scheduler note that has no
    // job length to compare with here) from a job block: a synthetic one, removed again below.
    NormalizeContext job_ctx;
    const json job = {{"world_size", *library_world}, {"train_steps", 1}};
    DT_RETURN_IF_ERROR(
        internal::Normalize(job, internal::JobBlockSchema(), "job", &job_ctx, &e["job"]));
  }
  DT_RETURN_IF_ERROR(CheckFeatures(e, ctx));

  JobSpec spec;
  std::vector<std::string>& notes = spec.notes;
  if (!ds_path->empty()) {
    notes.push_back(absl::StrCat("deepspeed_config: DeepSpeed keys read from \"", *ds_path,
                                 "\" and merged here"));
  }
  if (!migrated.empty()) notes.push_back(migrated);
  if (!migrated_param.empty()) notes.push_back(migrated_param);
  DT_RETURN_IF_ERROR(internal::ResolveZero(&e, ctx, &notes, &spec.zero));
  DT_RETURN_IF_ERROR(internal::ResolveParallelism(e, &spec));
  DT_RETURN_IF_ERROR(internal::ResolveBatch(&e, spec.data_parallel_size, &spec));
  DT_RETURN_IF_ERROR(internal::ResolveOptimizer(&e, &ctx, &notes, &spec.optimizer));
  DT_RETURN_IF_ERROR(internal::ResolveScheduler(&e, &ctx, &notes, &spec.scheduler));
  if (library_world) {
    spec.model.type = "module";
    spec.job.world_size = *library_world;
    spec.job.train_steps = 0;  // the program's loop decides
  } else {
    DT_RETURN_IF_ERROR(internal::ResolveModel(&e, base_dir, &spec.model));
    DT_RETURN_IF_ERROR(internal::ResolveData(&e, base_dir, spec.model, &spec.data));
    DT_RETURN_IF_ERROR(internal::ResolveJob(&e, base_dir, default_name, &spec.job));
  }
  DT_RETURN_IF_ERROR(internal::ResolveCheckpoint(&e, &spec.checkpoint));
  DT_RETURN_IF_ERROR(internal::ResolveOffload(&e, base_dir, &spec));
  DT_RETURN_IF_ERROR(internal::ResolvePipeline(e, &spec));
  internal::FillPrecision(&e, ctx, &notes, &spec);
  DT_RETURN_IF_ERROR(internal::ResolveGradientKeys(&e, ctx, &notes, &spec));
  // e["notes"] still holds the input's own list (that of an effective configuration).
  spec.no_effect_notes = NoEffectNotes(ctx, e["notes"]);
  notes.insert(notes.end(), spec.no_effect_notes.begin(), spec.no_effect_notes.end());
  e["notes"] = notes;
  if (library_world) e.erase("job");
  spec.effective = std::move(e);
  return spec;
}

absl::StatusOr<JobSpec> ParseWithSource(absl::string_view text, absl::string_view source,
                                        const std::string& base_dir,
                                        std::optional<int> world_size_override,
                                        const std::string& default_name,
                                        std::optional<int> library_world = std::nullopt) {
  std::string ds_path;
  std::set<std::string> from_file;
  absl::StatusOr<JobSpec> spec;
  try {
    spec = ParseImpl(text, source, base_dir, world_size_override, default_name, &ds_path,
                     &from_file, library_world);
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

model::GptConfig ModelShape(const ModelConfig& m) {
  return {m.n_layer, m.n_head, m.n_embd, m.vocab_size, m.padded_vocab_size, m.block_size};
}

absl::StatusOr<JobSpec> ParseJobSpec(std::string_view json_text, const std::string& base_dir,
                                     std::optional<int> world_size_override) {
  return ParseWithSource(absl::string_view(json_text.data(), json_text.size()), "job", base_dir,
                         world_size_override, "");
}

absl::StatusOr<JobSpec> ParseDeepSpeedConfig(std::string_view json_text, int world_size,
                                             const std::string& base_dir) {
  if (world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("world size: must be >= 1, got ", world_size));
  }
  return ParseWithSource(absl::string_view(json_text.data(), json_text.size()), "ds_config",
                         base_dir, std::nullopt, "", world_size);
}

absl::StatusOr<SchedulerConfig> ResolveSchedulerConfig(std::string_view type, const json& params) {
  SchedulerConfig out;
  out.type = std::string(type);
  if (out.type.empty()) return out;
  NormalizeContext ctx;
  try {
    DT_ASSIGN_OR_RETURN(out.params, internal::ResolveSchedulerParams(out.type, params, &ctx));
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

std::string NoteLines(const std::vector<std::string>& notes) {
  std::string out;
  for (const std::string& n : notes) absl::StrAppend(&out, "note: ", n, "\n");
  return out;
}

const char* JobDeviceName(JobDevice device) {
  switch (device) {
    case JobDevice::kCpu:
      return "cpu";
    case JobDevice::kCuda:
      return "cuda";
    case JobDevice::kAuto:
      break;
  }
  return "auto";
}

const char* PrecisionName(const JobSpec& spec) {
  return spec.fp16.enabled ? "fp16" : (spec.bf16.enabled ? "bf16" : "fp32");
}

}  // namespace dstrain::config
