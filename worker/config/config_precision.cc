// ParseJobSpec's step for fp16 and bf16 (docs/configuration.md, "The dynamic loss scaler
// (fp16)"). Their conflicts and unimplemented features are checked before, by CheckFeatures.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/config/resolve.h"

namespace dstrain::config::internal {

using nlohmann::json;

void FillPrecision(json* effective, const NormalizeContext& ctx, std::vector<std::string>* notes,
                   JobSpec* spec) {
  json& e = *effective;
  json& f = e["fp16"];
  Fp16Config& fp16 = spec->fp16;
  fp16.enabled = f["enabled"].get<bool>();
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

}  // namespace dstrain::config::internal
