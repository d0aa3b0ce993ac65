#include "worker/model/gpt.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace dstrain::model {

absl::StatusOr<std::unique_ptr<Gpt>> Gpt::Create(const GptConfig& config, device::Ops* ops,
                                                 BlockRange range) {
  DT_ASSIGN_OR_RETURN(std::unique_ptr<GptModule> module, GptModule::Create(config, range));
  DT_RETURN_IF_ERROR(module->Bind(ops));
  GptModule* raw = module.get();
  DT_ASSIGN_OR_RETURN(std::unique_ptr<api::ModuleModel> model,
                      api::ModuleModel::Create(std::move(module), ops));
  // The engine sees the size table's layout; the adapter lays the declarations out itself. They
  // must be the same buffer.
  const ParamLayout& table = raw->layout();
  const ParamLayout& declared = model->layout();
  bool same = table.total() == declared.total() &&
              table.params().size() == declared.params().size() &&
              table.modules().size() == declared.modules().size();
  for (size_t i = 0; same && i < table.params().size(); ++i) {
    const ParamSpec &a = table.params()[i], &b = declared.params()[i];
    same = a.name == b.name && a.offset == b.offset && a.numel == b.numel && a.module == b.module &&
           a.matrix == b.matrix;
  }
  if (!same) {
    return absl::InternalError("the GPT module's declarations do not lay out as its size table");
  }
  return std::unique_ptr<Gpt>(new Gpt(raw, std::move(model)));
}

absl::StatusOr<float> Gpt::Forward(ParamAccess& access, const int32_t* tokens,
                                   const int32_t* targets, int B, int T, float dloss, int buffer) {
  const std::vector<int64_t> shape = {B, T};
  Batch batch;
  if (tokens != nullptr) batch.Add("tokens", {DType::kI32, shape, tokens});
  if (targets != nullptr) batch.Add("targets", {DType::kI32, shape, targets});
  if (tokens == nullptr && targets == nullptr) {
    // A stage that reads neither array takes B and T from its prepared activations (the
    // module's own check of them, GptModule::CheckBatch, sees no array to read them from).
    if (B <= 0 || T <= 0 || T > config().block_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch shape (", B, ", ", T, ") out of range; block_size is ", config().block_size));
    }
    DT_RETURN_IF_ERROR(module_->Prepare(B, T));
  }
  // scale / (B·T·1) is dloss again, exactly: dloss·B·T is exact in a double.
  std::optional<LossGrad> grad;
  if (dloss > 0.f) grad = LossGrad{static_cast<double>(dloss) * B * T, 1};
  return model_->Forward(access, batch, grad, buffer);
}

absl::StatusOr<float> Gpt::Forward(tensor::View params, const int32_t* tokens,
                                   const int32_t* targets, int B, int T, float dloss, int buffer) {
  FlatParamAccess access(layout(), params);
  return Forward(access, tokens, targets, B, T, dloss, buffer);
}

absl::Status Gpt::Backward(tensor::View params, tensor::View grads) {
  FlatParamAccess access(layout(), params, grads);
  return Backward(access);
}

}  // namespace dstrain::model
