#include "worker/api/module_model.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/random/rng.h"
#include "common/status/status_macros.h"

namespace dstrain {

void Declarer::BeginModule(std::string name) { modules_.push_back({std::move(name), {}}); }

void Declarer::Add(std::string name, std::vector<int64_t> shape, Init init, bool matrix) {
  if (modules_.empty()) {
    if (error_.empty()) error_ = absl::StrCat("parameter '", name, "' declared before any module");
    return;
  }
  modules_.back().params.push_back({std::move(name), std::move(shape), matrix});
  inits_.push_back(init);
}

namespace api {

// One pass of one micro-batch over the engine's ParamAccess. Modules still held at the end are
// released by Finish.
class ModuleModel::PassImpl final : public Pass {
 public:
  PassImpl(ModuleModel* model, model::ParamAccess* access, model::Pass pass, bool training,
           int slot, MicroBatch* saved)
      : model_(model),
        access_(access),
        pass_(pass),
        training_(training),
        slot_(slot),
        saved_(saved) {}

  device::Ops& ops() override { return *model_->ops_; }
  bool training() const override { return training_; }
  double loss_grad() const override { return LossGradOver(1.0); }
  double LossGradOver(double count) const override {
    if (!training_) return 0.0;
    return saved_->grad.scale / (count * static_cast<double>(saved_->grad.divisor));
  }
  DType matmul_precision() const override { return model_->matmul_; }
  int micro_batch_slot() const override { return slot_; }

  absl::StatusOr<std::vector<View>> Params(int module) override {
    DT_RETURN_IF_ERROR(CheckModule(module));
    if (const auto it = params_.find(module); it != params_.end()) return it->second;
    DT_ASSIGN_OR_RETURN(model::ModuleParams p, access_->AcquireParams(module, pass_));
    return params_[module] = p.views;
  }

  absl::StatusOr<std::vector<View>> Grads(int module) override {
    bool fresh = false;
    DT_ASSIGN_OR_RETURN(std::vector<View> g, GradsForOverwrite(module, &fresh));
    if (fresh) {
      // ZeRO hands a micro-batch's matrix gradients unwritten, for matrix products that
      // overwrite them; a module accumulates, so they start at zero here.
      const model::ModuleSpec& spec = model_->layout_.modules()[module];
      for (size_t i = 0; i < spec.params.size(); ++i) {
        if (model_->layout_.params()[spec.params[i]].matrix) ops().Fill(g[i], 0.f);
      }
    }
    return g;
  }

  absl::StatusOr<std::vector<View>> GradsForOverwrite(int module, bool* fresh) override {
    DT_RETURN_IF_ERROR(CheckModule(module));
    if (pass_ != model::Pass::kBackward) {
      return absl::FailedPreconditionError("Pass::Grads: gradients exist in Backward only");
    }
    *fresh = false;
    if (const auto it = grads_.find(module); it != grads_.end()) return it->second;
    DT_ASSIGN_OR_RETURN(model::ModuleGrads g, access_->AcquireGrads(module));
    *fresh = g.fresh;
    return grads_[module] = g.views;
  }

  absl::Status ReleaseParams(int module) override {
    DT_RETURN_IF_ERROR(CheckModule(module));
    if (params_.erase(module) > 0) DT_RETURN_IF_ERROR(access_->ReleaseParams(module, pass_));
    return absl::OkStatus();
  }

  absl::Status Release(int module) override {
    DT_RETURN_IF_ERROR(CheckModule(module));
    if (grads_.erase(module) > 0) DT_RETURN_IF_ERROR(access_->ReleaseGrads(module));
    if (params_.erase(module) > 0) DT_RETURN_IF_ERROR(access_->ReleaseParams(module, pass_));
    return absl::OkStatus();
  }

  absl::StatusOr<View> Activation(const std::string& name, DType dtype,
                                  std::vector<int64_t> shape) override {
    if (pass_ != model::Pass::kForward) {
      return absl::FailedPreconditionError(
          absl::StrCat("Pass::Activation(\"", name, "\"): in Forward only; Backward uses Saved"));
    }
    if (saved_->activations.count(name) > 0) {
      return absl::InvalidArgumentError(absl::StrCat("activation '", name, "' made twice"));
    }
    DT_ASSIGN_OR_RETURN(tensor::Tensor t,
                        tensor::Tensor::Empty(model_->ops_->allocator(), dtype, std::move(shape),
                                              tensor::MemoryCategory::kActivations));
    const View v = t.view();
    saved_->activations.emplace(name, std::move(t));
    return v;
  }

  absl::StatusOr<View> Saved(const std::string& name) override {
    const auto it = saved_->activations.find(name);
    if (it == saved_->activations.end()) {
      return absl::NotFoundError(absl::StrCat("no activation '", name, "' from Forward"));
    }
    return it->second.view();
  }

  absl::StatusOr<View> Scratch(DType dtype, std::vector<int64_t> shape) override {
    DT_ASSIGN_OR_RETURN(tensor::Tensor t,
                        tensor::Tensor::Empty(model_->ops_->allocator(), dtype, std::move(shape),
                                              tensor::MemoryCategory::kActivations));
    scratch_.push_back(std::move(t));
    return scratch_.back().view();
  }

  absl::StatusOr<View> Input(const Batch& batch, const std::string& name, DType dtype,
                             std::vector<int64_t> shape) override {
    DT_ASSIGN_OR_RETURN(const BatchTensor t,
                        batch.Get(name, dtype, static_cast<int>(shape.size())));
    if (t.shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat("batch: '", name, "' has shape [",
                                                     absl::StrJoin(t.shape, ", "), "], expected [",
                                                     absl::StrJoin(shape, ", "), "]"));
    }
    DT_ASSIGN_OR_RETURN(View v, Activation(name, dtype, std::move(shape)));
    ops().CopyFromHost(v, t.data);
    return v;
  }

  // Releases what the module still holds; the first error wins.
  absl::Status Finish() {
    // Scratch memory goes with the pass: the device must be done with it first.
    absl::Status status = scratch_.empty() ? ops().status() : ops().Synchronize();
    scratch_.clear();
    std::set<int> held;
    for (const auto& [m, v] : params_) held.insert(m);
    for (const auto& [m, v] : grads_) held.insert(m);
    for (int m : held) {
      absl::Status s = Release(m);
      if (status.ok()) status = s;
    }
    return status;
  }

 private:
  absl::Status CheckModule(int module) const {
    const int n = static_cast<int>(model_->layout_.modules().size());
    if (module < 0 || module >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat("module ", module, " outside the ", n, " declared"));
    }
    return absl::OkStatus();
  }

  ModuleModel* model_;
  model::ParamAccess* access_;
  model::Pass pass_;
  bool training_;
  int slot_;
  ModuleModel::MicroBatch* saved_;
  std::map<int, std::vector<View>> params_, grads_;
  std::vector<tensor::Tensor> scratch_;  // freed by Finish
};

absl::StatusOr<model::ParamLayout> ModuleModel::DeclaredLayout(Module& module) {
  Declarer declarer;
  DT_RETURN_IF_ERROR(module.Declare(declarer));
  if (!declarer.error().empty()) return absl::InvalidArgumentError(declarer.error());
  return model::ParamLayout::FromDeclared(declarer.modules());
}

absl::StatusOr<std::unique_ptr<ModuleModel>> ModuleModel::Create(std::unique_ptr<Module> module,
                                                                 device::Ops* ops) {
  if (module == nullptr) return absl::InvalidArgumentError("no module");
  Declarer declarer;
  DT_RETURN_IF_ERROR(module->Declare(declarer));
  if (!declarer.error().empty()) return absl::InvalidArgumentError(declarer.error());
  DT_ASSIGN_OR_RETURN(model::ParamLayout layout,
                      model::ParamLayout::FromDeclared(declarer.modules()));
  for (const Init& init : declarer.inits()) {
    if (init.kind == Init::Kind::kNormal && !(init.b >= 0)) {
      return absl::InvalidArgumentError("Init::Normal: the standard deviation must be >= 0");
    }
    if (init.kind == Init::Kind::kUniform && !(init.a <= init.b)) {
      return absl::InvalidArgumentError("Init::Uniform: low must be <= high");
    }
  }
  return std::unique_ptr<ModuleModel>(
      new ModuleModel(std::move(module), ops, std::move(layout), declarer.inits()));
}

absl::Status ModuleModel::ImportParams(const std::string& path, float* params) const {
  std::fill(params, params + layout_.total(), 0.f);
  return module_->ImportParams(path, layout_, params);
}

void ModuleModel::InitParams(float* params, uint64_t seed) const {
  std::fill(params, params + layout_.total(), 0.f);  // padding included
  if (module_->InitParams(layout_, seed, params)) return;
  for (size_t i = 0; i < layout_.params().size(); ++i) {
    const model::ParamSpec& p = layout_.params()[i];
    const Init& init = inits_[i];
    Rng rng(seed * 0x9E3779B97F4A7C15ull + i);
    float* out = params + p.offset;
    for (int64_t k = 0; k < p.numel; ++k) {
      switch (init.kind) {
        case Init::Kind::kConstant:
          out[k] = static_cast<float>(init.a);
          break;
        case Init::Kind::kNormal:
          out[k] = static_cast<float>(init.a + init.b * rng.Normal());
          break;
        case Init::Kind::kUniform:
          out[k] = static_cast<float>(init.a + (init.b - init.a) * rng.Uniform());
          break;
      }
    }
  }
}

absl::StatusOr<float> ModuleModel::Forward(model::ParamAccess& access, const model::Batch& batch,
                                           std::optional<model::LossGrad> grad, int buffer) {
  MicroBatch& saved = saved_[buffer];
  saved = MicroBatch();  // a new micro-batch in this buffer
  if (grad) saved.grad = *grad;
  PassImpl pass(this, &access, model::Pass::kForward, grad.has_value(), buffer, &saved);
  absl::StatusOr<float> loss = module_->Forward(pass, batch);
  absl::Status finished = pass.Finish();
  if (!loss.ok()) return loss.status();
  DT_RETURN_IF_ERROR(finished);
  if (grad) {
    saved.ready = true;
  } else {
    saved_.erase(buffer);
  }
  return loss;
}

absl::Status ModuleModel::Backward(model::ParamAccess& access, int buffer) {
  const auto it = saved_.find(buffer);
  if (it == saved_.end() || !it->second.ready) {
    return absl::FailedPreconditionError(
        absl::StrCat("Backward: buffer ", buffer, " holds no training Forward"));
  }
  PassImpl pass(this, &access, model::Pass::kBackward, /*training=*/true, buffer, &it->second);
  absl::Status status = module_->Backward(pass);
  absl::Status finished = pass.Finish();
  saved_.erase(it);  // the micro-batch's activations go with its backward
  DT_RETURN_IF_ERROR(status);
  return finished;
}

}  // namespace api
}  // namespace dstrain
