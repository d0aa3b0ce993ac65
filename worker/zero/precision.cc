#include "worker/zero/precision.h"

namespace dstrain::zero {

DType GradAccumulationDType(std::optional<DType> requested, DType storage, int stage) {
  if (requested.has_value()) return *requested;
  return storage == DType::kBF16 && stage == 0 ? DType::kF32 : storage;
}

StatePrecision StatePrecision::Of(const config::JobSpec& spec) {
  StatePrecision p;
  p.storage = spec.fp16.enabled ? DType::kF16 : (spec.bf16.enabled ? DType::kBF16 : DType::kF32);
  p.grad_accum = spec.grad_accum_dtype;
  p.communication = spec.communication_data_type == "fp16"   ? DType::kF16
                    : spec.communication_data_type == "bf16" ? DType::kBF16
                                                             : DType::kF32;
  return p;
}

}  // namespace dstrain::zero
