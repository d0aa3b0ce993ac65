// The dtypes of a job's ZeRO state: what parameters are stored in, what gradients accumulate in
// over a step's micro-batches and what they travel in (docs/configuration.md, "Mixed precision"
// and "Gradient averaging"). One resolution for the engine and `dstrain estimate`.
#pragma once

#include <optional>

#include "common/types/dtype.h"
#include "worker/config/config.h"

namespace dstrain::zero {

// DeepSpeed's resolution of data_types.grad_accum_dtype (its engine's get_data_types): a
// requested dtype as given; None is fp32 for bf16 without ZeRO (stage 0), otherwise the
// parameters' storage dtype.
DType GradAccumulationDType(std::optional<DType> requested, DType storage, int stage);

struct StatePrecision {
  DType storage = DType::kF32;        // kF32, or kBF16 / kF16 for mixed precision
  std::optional<DType> grad_accum;    // as the job asks; GradAccumulationDType resolves it
  DType communication = DType::kF32;  // communication_data_type, resolved by the config

  static StatePrecision Of(const config::JobSpec& spec);
  DType GradsAt(int stage) const { return GradAccumulationDType(grad_accum, storage, stage); }
  // The matrix products' operand type (Model::set_matmul_precision): bf16 under bf16 mixed
  // precision, fp32 otherwise (fp16 jobs widen to fp32 for the products).
  DType Matmul() const { return storage == DType::kBF16 ? DType::kBF16 : DType::kF32; }
};

}  // namespace dstrain::zero
