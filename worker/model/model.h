// What the engine trains: a model whose parameters are laid out in one flat buffer of modules
// (param_layout.h) and whose forward and backward passes reach them one module at a time through
// a ParamAccess (param_access.h), so that the engine and ZeRO decide where they live.
//
//   model::Batch batch;
//   batch.Add("tokens", {DType::kI32, {B, T}, tokens}).Add("targets", {DType::kI32, {B, T}, y});
//   loss = model.Forward(access, batch, model::LossGrad{scale, accumulation});  // training
//   model.Backward(access);
//
// The library's modules (worker/api/module.h) are made one by an adapter (api::ModuleModel): a
// user's, the Llama, and the built-in GPT (gpt_module.h; gpt.h adds its pipeline extras).
// docs/library.md describes the split.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/types/dtype.h"
#include "worker/device/ops.h"
#include "worker/model/param_access.h"
#include "worker/model/param_layout.h"

namespace dstrain::model {

class Gpt;

// One array of a micro-batch in host memory (not owned).
struct BatchTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  int64_t numel() const;
};

// A micro-batch: named host arrays the model reads (the GPT: "tokens" and "targets", (B, T)
// int32). Holds pointers only; the arrays must outlive the call that reads them.
class Batch {
 public:
  Batch& Add(std::string name, BatchTensor tensor);
  // The array called `name`, checked to be of `dtype` and `rank` dimensions: kInvalidArgument
  // naming the array and what is wrong otherwise.
  absl::StatusOr<BatchTensor> Get(absl::string_view name, DType dtype, int rank) const;
  bool Has(absl::string_view name) const { return tensors_.count(name) > 0; }
  const std::map<std::string, BatchTensor, std::less<>>& tensors() const { return tensors_; }

 private:
  std::map<std::string, BatchTensor, std::less<>> tensors_;
};

// What the backward pass multiplies d(loss)/d(·) by. DeepSpeed divides each micro-batch's loss by
// gradient_accumulation_steps and multiplies it by the loss scale (fp16); the two are kept apart
// so a model that divides by its own count (the GPT's B·T tokens) rounds the product once:
// factor = scale / (count · divisor).
struct LossGrad {
  double scale = 1.0;
  int64_t divisor = 1;
};

class Model {
 public:
  virtual ~Model() = default;

  virtual const ParamLayout& layout() const = 0;
  virtual device::Ops& ops() const = 0;
  // The operand type of matrix products: kF32, or kBF16 (bf16 mixed precision).
  virtual void set_matmul_precision(DType compute) = 0;
  // The initial parameters into a host buffer of layout().total() floats, deterministic from
  // `seed`.
  virtual void InitParams(float* params, uint64_t seed) const = 0;
  // The initial parameters from a weight file in the model's own exchange format (model.init_from:
  // the GPT's llm.c model file, the Llama's Hugging Face safetensors) into a host buffer of
  // layout().total() floats. kInvalidArgument naming the file and what does not match the model;
  // kUnimplemented for a model that reads no files.
  virtual absl::Status ImportParams(const std::string& path, float* params) const {
    return absl::UnimplementedError(
        absl::StrCat("model.init_from: ", path, ": this model reads no weight files"));
  }

  // The forward pass of one micro-batch; returns its loss. With `grad` it is a training forward
  // whose activations (in `buffer`) stay for Backward; without, an evaluation. Errors:
  // kInvalidArgument for a batch the model cannot read (naming the array), device errors.
  virtual absl::StatusOr<float> Forward(ParamAccess& access, const Batch& batch,
                                        std::optional<LossGrad> grad, int buffer = 0) = 0;
  // Accumulates (+=) the gradients of buffer `buffer`'s micro-batch.
  virtual absl::Status Backward(ParamAccess& access, int buffer = 0) = 0;

  // The built-in GPT's own features (pipeline stages, its file formats, sampling), or null.
  virtual Gpt* AsGpt() { return nullptr; }
};

}  // namespace dstrain::model
