// dstrain::Module: a model of your own, trained by dstrain's engine (ZeRO stages 0-3, bf16/fp16
// mixed precision, gradient accumulation, clipping, the LR schedules) as DeepSpeed trains a
// torch.nn.Module. docs/library.md is the guide.
//
//   class Linear2 final : public dstrain::Module {
//    public:
//     absl::Status Declare(dstrain::Declarer& d) override {
//       d.BeginModule("fc");                       // the unit ZeRO-3 gathers and frees
//       d.Add("fc.w", {10, 4}, dstrain::Init::Normal(0.02), /*matrix=*/true);
//       d.Add("fc.b", {10}, dstrain::Init::Zeros());
//       return absl::OkStatus();
//     }
//     absl::StatusOr<float> Forward(dstrain::Pass& pass, const dstrain::Batch& batch) override {
//       DT_ASSIGN_OR_RETURN(auto x, pass.Input(batch, "x", DType::kF32, {B, 4}));
//       DT_ASSIGN_OR_RETURN(auto w, pass.Params(0));     // module 0's parameters, in order
//       DT_ASSIGN_OR_RETURN(View logits, pass.Activation("logits", DType::kF32, {B, 10}));
//       pass.ops().LinearForward(logits, x, w[0], w[1], {});
//       ...  // the loss: pass.ops().CrossEntropy(..., pass.loss_grad() / B) fuses its backward
//     }
//     absl::Status Backward(dstrain::Pass& pass) override {
//       DT_ASSIGN_OR_RETURN(auto w, pass.Params(0));
//       DT_ASSIGN_OR_RETURN(auto g, pass.Grads(0));      // accumulate (+=) into these
//       ...
//     }
//   };
//
// The forward and backward passes are written against device::Ops, the device seam: the same
// code runs on the CPU and on a GPU. Parameters live where the engine puts them (one flat buffer,
// ZeRO partitions, a ZeRO-3 gather that exists while the module is in use) and are reached one
// module at a time; activations come from the engine's allocator and live from a micro-batch's
// Forward to the end of its Backward. Not thread-safe: one pass at a time.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/types/dtype.h"
#include "worker/device/ops.h"
#include "worker/model/model.h"
#include "worker/model/param_access.h"
#include "worker/model/param_layout.h"
#include "worker/tensor/tensor.h"
#include "worker/tensor/view.h"

namespace dstrain {

using Batch = model::Batch;
using BatchTensor = model::BatchTensor;
using View = tensor::View;

// How a parameter starts (deterministic from the job's model.init_seed and its position).
struct Init {
  enum class Kind { kConstant, kNormal, kUniform };
  Kind kind = Kind::kConstant;
  double a = 0, b = 0;  // constant: a; normal: mean a, std b; uniform: [a, b)
  static Init Zeros() { return {Kind::kConstant, 0, 0}; }
  static Init Ones() { return {Kind::kConstant, 1, 0}; }
  static Init Constant(double v) { return {Kind::kConstant, v, 0}; }
  static Init Normal(double stddev, double mean = 0) { return {Kind::kNormal, mean, stddev}; }
  static Init Uniform(double low, double high) { return {Kind::kUniform, low, high}; }
};

// Collects a module's parameters in Module::Declare.
class Declarer {
 public:
  // Starts module `name`: the parameters added after it belong to it, until the next.
  void BeginModule(std::string name);
  // A parameter of `shape` (f32; held 16-bit under bf16 mixed precision when `matrix`, and then
  // handed to the matrix products in that type). Its index within its module is the order of
  // the calls. Errors (a parameter before any module, a name used twice, a dimension < 1) are
  // reported by Initialize, naming the parameter.
  void Add(std::string name, std::vector<int64_t> shape, Init init, bool matrix = false);

  // For the engine.
  const std::vector<model::ParamLayout::DeclaredModule>& modules() const { return modules_; }
  const std::vector<Init>& inits() const { return inits_; }
  const std::string& error() const { return error_; }

 private:
  std::vector<model::ParamLayout::DeclaredModule> modules_;
  std::vector<Init> inits_;  // per parameter, in declaration order
  std::string error_;        // the first misuse
};

// One forward or backward pass of a micro-batch, as the module sees it.
class Pass {
 public:
  virtual ~Pass() = default;
  virtual device::Ops& ops() = 0;
  // True in a training forward and in backward; false in an evaluation.
  virtual bool training() const = 0;
  // What the backward pass multiplies d(loss)/d(·) by: the loss scale over
  // gradient_accumulation_steps (fold your own mean's 1/N in); 0 in an evaluation.
  virtual double loss_grad() const = 0;
  // loss_grad() / count, rounded once (the loss scale / (count · gradient_accumulation_steps)):
  // the factor of a loss that is a mean over `count` items, as the built-in GPT's over its B·T
  // tokens. 0 in an evaluation.
  virtual double LossGradOver(double count) const = 0;
  // The operand type the job asks of matrix products (LinearOptions::compute): kBF16 under bf16
  // mixed precision, else kF32.
  virtual DType matmul_precision() const = 0;
  // Which of the engine's micro-batches in flight this pass belongs to: 0, or under pipeline
  // parallelism the slot of one of a stage's micro-batches. A module that keeps activation
  // memory of its own (from ops().allocator()) keeps a set per slot.
  virtual int micro_batch_slot() const = 0;
  // Module `module`'s parameters, one view per parameter in declaration order, on the device
  // (f32; a `matrix` parameter may be bf16 under bf16 mixed precision). Valid until
  // Release(module) or the end of the pass, which releases what is still held.
  virtual absl::StatusOr<std::vector<View>> Params(int module) = 0;
  // Backward only: module `module`'s gradient buffers (f32), to accumulate (+=) into. The
  // gradients of a module are complete when it is released.
  virtual absl::StatusOr<std::vector<View>> Grads(int module) = 0;
  // Grads without the zeroing: when this micro-batch is the first to write the module's
  // gradients, `*fresh` is true and its `matrix` gradients are left unwritten, for matrix
  // products that overwrite them (LinearOptions::overwrite_dweight; one pass over the memory
  // saved). The other gradients start at zero as in Grads. `*fresh` is false when the module's
  // gradients were already handed out in this pass (or hold an earlier micro-batch's).
  virtual absl::StatusOr<std::vector<View>> GradsForOverwrite(int module, bool* fresh) = 0;
  // Lets module `module`'s parameters and gradients go.
  virtual absl::Status Release(int module) = 0;
  // Lets the parameters go and keeps the gradients: a weight used at both ends of the model (a
  // tied embedding) holds its gradients from its first use in Backward to its last without
  // keeping its parameters (under ZeRO-3, a gathered copy) in between.
  virtual absl::Status ReleaseParams(int module) = 0;
  // Forward: device memory for an activation of this micro-batch, kept (with its contents) until
  // the end of its Backward, which finds it by name with Saved. Uninitialised.
  virtual absl::StatusOr<View> Activation(const std::string& name, DType dtype,
                                          std::vector<int64_t> shape) = 0;
  virtual absl::StatusOr<View> Saved(const std::string& name) = 0;
  // Device memory for this pass alone (e.g. a gradient on its way between layers), freed when
  // the pass ends. Uninitialised.
  virtual absl::StatusOr<View> Scratch(DType dtype, std::vector<int64_t> shape) = 0;
  // Forward: batch array `name` checked against `dtype` and `shape`, copied to the device (kept
  // like an activation of the same name).
  virtual absl::StatusOr<View> Input(const Batch& batch, const std::string& name, DType dtype,
                                     std::vector<int64_t> shape) = 0;
};

class Module {
 public:
  virtual ~Module() = default;
  // Declares the parameters, grouped into modules. Called once, by Initialize.
  virtual absl::Status Declare(Declarer& declarer) = 0;
  // The forward pass of one micro-batch; returns its loss (the quantity whose gradient Backward
  // computes, e.g. a mean over the batch). In a training pass the activations Backward needs are
  // made with pass.Activation.
  virtual absl::StatusOr<float> Forward(Pass& pass, const Batch& batch) = 0;
  // Accumulates this micro-batch's gradients: d(loss)/d(parameter) · pass.loss_grad().
  virtual absl::Status Backward(Pass& pass) = 0;
  // Optional: draws the initial parameters itself into `params` (layout.total() floats, zeroed)
  // from the job's `seed`, and returns true; the default returns false and each parameter is
  // drawn from its declared Init. (The built-in GPT draws as GPT-2 does, in one sequence over the
  // whole model, so that a pipeline stage gets the whole model's values.)
  virtual bool InitParams(const model::ParamLayout& layout, uint64_t seed, float* params) const {
    (void)layout;
    (void)seed;
    (void)params;
    return false;
  }
  // Optional: the parameters from a weight file in this module's own exchange format (a job's
  // model.init_from; the Llama's is Hugging Face safetensors) into `params` (layout.total()
  // floats, zeroed), each parameter at its layout offset. Errors name the file and what does not
  // match. The default reads no files (kUnimplemented).
  virtual absl::Status ImportParams(const std::string& path, const model::ParamLayout& layout,
                                    float* params) {
    (void)layout;
    (void)params;
    return absl::UnimplementedError(
        absl::StrCat("model.init_from: ", path, ": this module reads no weight files"));
  }
};

}  // namespace dstrain
