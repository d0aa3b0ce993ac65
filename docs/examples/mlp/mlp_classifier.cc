// A classifier of your own trained by dstrain (docs/library.md): which of 4 sectors a point of
// the plane lies in, seen through 16 noisy features. Two ranks with ZeRO-2:
//   dstrain launch --nproc 2 -- bazel-bin/docs/examples/mlp/mlp_classifier
#include <cmath>
#include <cstdio>
#include <random>

#include "common/status/status_macros.h"
#include "worker/api/engine.h"

using namespace dstrain;  // NOLINT: an example
constexpr int kFeatures = 16, kHidden = 64, kClasses = 4;

class Classifier final : public Module {
  absl::Status Declare(Declarer& d) override {
    d.BeginModule("hidden");
    d.Add("hidden.w", {kHidden, kFeatures}, Init::Normal(0.2), /*matrix=*/true);
    d.Add("hidden.b", {kHidden}, Init::Zeros());
    d.BeginModule("out");
    d.Add("out.w", {kClasses, kHidden}, Init::Normal(0.1), /*matrix=*/true);
    d.Add("out.b", {kClasses}, Init::Zeros());
    return absl::OkStatus();
  }
  absl::StatusOr<float> Forward(Pass& p, const Batch& batch) override {
    DT_ASSIGN_OR_RETURN(BatchTensor labels, batch.Get("label", DType::kI32, 1));
    const int64_t n = labels.shape[0];
    DT_ASSIGN_OR_RETURN(View x, p.Input(batch, "x", DType::kF32, {n, kFeatures}));
    DT_ASSIGN_OR_RETURN(View y, p.Input(batch, "label", DType::kI32, {n}));
    DT_ASSIGN_OR_RETURN(View pre, p.Activation("pre", DType::kF32, {n, kHidden}));
    DT_ASSIGN_OR_RETURN(View h, p.Activation("h", DType::kF32, {n, kHidden}));
    DT_ASSIGN_OR_RETURN(View logits, p.Activation("logits", DType::kF32, {n, kClasses}));
    DT_ASSIGN_OR_RETURN(View losses, p.Scratch(DType::kF32, {n}));
    DT_ASSIGN_OR_RETURN(auto w, p.Params(0));
    p.ops().LinearForward(h, x, w[0], w[1], {.output_gelu = pre});
    DT_ASSIGN_OR_RETURN(auto v, p.Params(1));
    p.ops().LinearForward(logits, h, v[0], v[1], {});
    // Mean cross-entropy; its backward is fused in (logits become their gradient).
    p.ops().CrossEntropy(losses, logits, y, kClasses, static_cast<float>(p.loss_grad() / n));
    DT_ASSIGN_OR_RETURN(double loss, p.ops().MeanLoss(losses));
    return static_cast<float>(loss);
  }
  absl::Status Backward(Pass& p) override {
    DT_ASSIGN_OR_RETURN(View dlogits, p.Saved("logits"));
    DT_ASSIGN_OR_RETURN(View h, p.Saved("h"));
    DT_ASSIGN_OR_RETURN(View pre, p.Saved("pre"));
    DT_ASSIGN_OR_RETURN(View x, p.Saved("x"));
    DT_ASSIGN_OR_RETURN(View dpre, p.Scratch(DType::kF32, {pre.shape()[0], kHidden}));
    DT_ASSIGN_OR_RETURN(View dx, p.Scratch(DType::kF32, {x.shape()[0], kFeatures}));
    DT_ASSIGN_OR_RETURN(auto v, p.Params(1));
    DT_ASSIGN_OR_RETURN(auto dv, p.Grads(1));
    p.ops().LinearBackward(dpre, dv[0], dv[1], dlogits, h, v[0], {.input_gelu = pre});
    DT_ASSIGN_OR_RETURN(auto w, p.Params(0));
    DT_ASSIGN_OR_RETURN(auto dw, p.Grads(0));
    p.ops().LinearBackward(dx, dw[0], dw[1], dpre, x, w[0], {});
    return absl::OkStatus();
  }
};

absl::Status Train() {
  DT_ASSIGN_OR_RETURN(auto engine, Initialize(std::make_unique<Classifier>(), R"({
      "train_batch_size": 64, "optimizer": {"type": "AdamW", "params": {"lr": 0.003}},
      "zero_optimization": {"stage": 2}})"));
  std::mt19937 rng(7 + engine->rank());  // each rank its own samples
  std::normal_distribution<float> noise(0.f, 0.1f);
  const int n = static_cast<int>(engine->micro_batch_size());
  std::vector<float> x(n * kFeatures);
  std::vector<int32_t> label(n);
  for (int step = 1; step <= 300; ++step) {
    for (int i = 0; i < n; ++i) {
      const float angle = std::uniform_real_distribution<float>(0.f, 6.2831853f)(rng);
      label[i] = static_cast<int32_t>(angle / 1.5707964f) % kClasses;
      for (int f = 0; f < kFeatures; ++f) x[i * kFeatures + f] = std::cos(angle - f) + noise(rng);
    }
    Batch batch;
    batch.Add("x", {DType::kF32, {n, kFeatures}, x.data()});
    batch.Add("label", {DType::kI32, {n}, label.data()});
    DT_RETURN_IF_ERROR(engine->Forward(batch).status());
    DT_RETURN_IF_ERROR(engine->Backward());
    DT_ASSIGN_OR_RETURN(std::optional<StepStats> stats, engine->Step());  // one micro-batch a step
    if (engine->rank() == 0 && (step == 1 || step % 50 == 0))
      std::printf("step %d loss %.4f\n", step, stats->loss);
  }
  return absl::OkStatus();
}

int main() {
  const absl::Status status = Train();
  if (!status.ok()) std::fprintf(stderr, "%s\n", status.ToString().c_str());
  return status.ok() ? 0 : 1;
}
