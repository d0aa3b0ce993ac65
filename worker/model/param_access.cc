#include "worker/model/param_access.h"

#include "absl/strings/str_cat.h"

namespace dstrain::model {

std::vector<tensor::View> ModuleViews(const ParamLayout& layout, int module, const void* base,
                                      DType dtype, Device device) {
  const ModuleSpec& m = layout.modules()[module];
  std::vector<tensor::View> views;
  views.reserve(m.params.size());
  for (int i : m.params) {
    const ParamSpec& p = layout.params()[i];
    const char* at = static_cast<const char*>(base) + (p.offset - m.offset) * DTypeSize(dtype);
    views.emplace_back(at, dtype, tensor::Shape(p.shape.begin(), p.shape.end()), device);
  }
  return views;
}

absl::StatusOr<ModuleParams> FlatParamAccess::AcquireParams(int module, Pass) {
  if (params_.numel() != layout_.total() || params_.dtype() != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("flat parameters ", params_.DebugString(),
                                                   " do not fit a layout of ", layout_.total(),
                                                   " f32 elements"));
  }
  const int64_t offset = layout_.modules()[module].offset;
  return ModuleParams{
      ModuleViews(layout_, module, params_.as<float>() + offset, DType::kF32, params_.device())};
}

absl::StatusOr<ModuleGrads> FlatParamAccess::AcquireGrads(int module) {
  if (grads_.empty()) return absl::FailedPreconditionError("no gradient buffer (forward only)");
  if (grads_.numel() != layout_.total() || grads_.dtype() != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("flat gradients ", grads_.DebugString(),
                                                   " do not fit a layout of ", layout_.total(),
                                                   " f32 elements"));
  }
  const int64_t offset = layout_.modules()[module].offset;
  return ModuleGrads{
      ModuleViews(layout_, module, grads_.as<float>() + offset, DType::kF32, grads_.device()),
      /*fresh=*/false};
}

}  // namespace dstrain::model
