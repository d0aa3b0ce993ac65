// ParseJobSpec's steps for DeepSpeed's top-level keys: the data-parallel size, the batch triple
// and its inference (docs/job-file.md, "Batch size"), and the gradient clipping and reduction keys
// (docs/configuration.md, "Gradient averaging").
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "worker/config/resolve.h"
#include "worker/config/strict_json.h"

namespace dstrain::config::internal {
namespace {

using nlohmann::json;

std::optional<int64_t> OptionalInt(const json& v) {
  if (v.is_null()) return std::nullopt;
  return v.get<int64_t>();
}

}  // namespace

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

absl::Status ResolveCheckpoint(json* e, CheckpointConfig* out) {
  json& value = (*e)["checkpoint"]["tag_validation"];
  const std::string upper = absl::AsciiStrToUpper(value.get<std::string>());
  if (upper == "IGNORE") {
    out->tag_validation = TagValidation::kIgnore;
    value = "Ignore";
  } else if (upper == "WARN") {
    out->tag_validation = TagValidation::kWarn;
    value = "Warn";
  } else if (upper == "FAIL") {
    out->tag_validation = TagValidation::kFail;
    value = "Fail";
  } else {
    return Error("checkpoint.tag_validation",
                 R"(must be one of "Ignore", "Warn", "Fail" (in any case); got )",
                 internal::ShortDump(value));
  }
  return absl::OkStatus();
}

absl::Status ResolveGradientKeys(json* effective, const NormalizeContext& ctx,
                                 std::vector<std::string>* notes, JobSpec* spec) {
  json& e = *effective;
  spec->gradient_clipping = e["gradient_clipping"].get<double>();
  spec->prescale_gradients = e["prescale_gradients"].get<bool>();
  spec->gradient_predivide_factor = e["gradient_predivide_factor"].get<double>();
  if (!(spec->gradient_predivide_factor > 0)) {
    return Error("gradient_predivide_factor", "must be > 0, got ", spec->gradient_predivide_factor);
  }
  if (e["communication_data_type"].is_null()) {
    spec->communication_data_type = PrecisionName(*spec);
    e["communication_data_type"] = spec->communication_data_type;
  } else {
    spec->communication_data_type = e["communication_data_type"].get<std::string>();
    const std::string storage = PrecisionName(*spec);
    if (spec->communication_data_type != "fp32" && storage != "fp32" &&
        spec->communication_data_type != storage) {
      return Error("communication_data_type", "\"", spec->communication_data_type, "\" with ",
                   storage, " training is not supported (use \"", storage, "\" or \"fp32\")");
    }
  }
  const json& accum = e["data_types"]["grad_accum_dtype"];
  if (!accum.is_null()) {
    const std::string name = accum.get<std::string>();
    const std::string storage = PrecisionName(*spec);
    // Gradients are produced in the storage type; accumulating them in fp32 widens them, while
    // another 16-bit type would round them to a different format (DeepSpeed rejects such mixes).
    if (name != "fp32" && name != storage) {
      return Error("data_types.grad_accum_dtype", "\"", name, "\" with ", storage,
                   " training is not supported (use \"fp32\"",
                   storage == "fp32" ? "" : absl::StrCat(" or \"", storage, "\""), ")");
    }
    spec->grad_accum_dtype = name == "fp16"   ? DType::kF16
                             : name == "bf16" ? DType::kBF16
                                              : DType::kF32;
  }
  spec->steps_per_print = OptionalInt(e["steps_per_print"]);
  if (!ctx.given.count("gradient_clipping")) {
    notes->push_back("gradient_clipping: 0 (off), DeepSpeed's code default; its docs say 1.0");
  }
  return absl::OkStatus();
}

}  // namespace dstrain::config::internal
