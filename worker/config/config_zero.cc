// ParseJobSpec's step for zero_optimization: the implemented stages, DeepSpeed's deprecated
// spellings (migrated, or rejected next to their replacements) and overlap_comm's stage default.
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/config/features.h"
#include "worker/config/keys.h"
#include "worker/config/resolve.h"

namespace dstrain::config::internal {

using nlohmann::json;

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
  return absl::OkStatus();
}

}  // namespace dstrain::config::internal
