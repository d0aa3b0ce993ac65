#include "worker/api/testing/mlp_module.h"

#include <cmath>

#include "common/random/rng.h"
#include "common/status/status_macros.h"

namespace dstrain::api::testing {

absl::Status Mlp::Declare(Declarer& d) {
  d.BeginModule("fc1");
  d.Add("fc1.w", {hidden_, kIn}, Init::Normal(0.3), /*matrix=*/true);
  d.Add("fc1.b", {hidden_}, Init::Zeros());
  d.BeginModule("fc2");
  d.Add("fc2.w", {kClasses, hidden_}, Init::Normal(0.3), /*matrix=*/true);
  d.Add("fc2.b", {kClasses}, Init::Zeros());
  return absl::OkStatus();
}

absl::StatusOr<float> Mlp::Forward(Pass& pass, const Batch& batch) {
  DT_ASSIGN_OR_RETURN(const BatchTensor xs, batch.Get("x", DType::kF32, 2));
  const int64_t B = xs.shape[0];
  DT_ASSIGN_OR_RETURN(View x, pass.Input(batch, "x", DType::kF32, {B, kIn}));
  DT_ASSIGN_OR_RETURN(View y, pass.Input(batch, "y", DType::kI32, {B}));
  DT_ASSIGN_OR_RETURN(View pre, pass.Activation("pre", DType::kF32, {B, hidden_}));
  DT_ASSIGN_OR_RETURN(View h, pass.Activation("h", DType::kF32, {B, hidden_}));
  DT_ASSIGN_OR_RETURN(View logits, pass.Activation("logits", DType::kF32, {B, kClasses}));
  DT_ASSIGN_OR_RETURN(View losses, pass.Activation("losses", DType::kF32, {B}));
  device::LinearOptions o1;
  o1.output_gelu = pre;
  DT_ASSIGN_OR_RETURN(std::vector<View> w1, pass.Params(0));
  pass.ops().LinearForward(h, x, w1[0], w1[1], o1);
  DT_RETURN_IF_ERROR(pass.Release(0));
  DT_ASSIGN_OR_RETURN(std::vector<View> w2, pass.Params(1));
  pass.ops().LinearForward(logits, h, w2[0], w2[1], {});
  // The backward of the mean cross-entropy is fused in: logits become dlogits.
  pass.ops().CrossEntropy(losses, logits, y, kClasses,
                          static_cast<float>(pass.loss_grad() / static_cast<double>(B)));
  DT_ASSIGN_OR_RETURN(double loss, pass.ops().MeanLoss(losses));
  return static_cast<float>(loss);
}

absl::Status Mlp::Backward(Pass& pass) {
  DT_ASSIGN_OR_RETURN(View dlogits, pass.Saved("logits"));
  DT_ASSIGN_OR_RETURN(View h, pass.Saved("h"));
  DT_ASSIGN_OR_RETURN(View pre, pass.Saved("pre"));
  DT_ASSIGN_OR_RETURN(View x, pass.Saved("x"));
  DT_ASSIGN_OR_RETURN(View dpre, pass.Scratch(DType::kF32, {pre.shape()[0], hidden_}));
  DT_ASSIGN_OR_RETURN(View dx, pass.Scratch(DType::kF32, {x.shape()[0], kIn}));
  DT_ASSIGN_OR_RETURN(std::vector<View> w2, pass.Params(1));
  DT_ASSIGN_OR_RETURN(std::vector<View> g2, pass.Grads(1));
  device::LinearOptions o2;
  o2.input_gelu = pre;
  pass.ops().LinearBackward(dpre, g2[0], g2[1], dlogits, h, w2[0], o2);
  DT_RETURN_IF_ERROR(pass.Release(1));
  DT_ASSIGN_OR_RETURN(std::vector<View> w1, pass.Params(0));
  DT_ASSIGN_OR_RETURN(std::vector<View> g1, pass.Grads(0));
  pass.ops().LinearBackward(dx, g1[0], g1[1], dpre, x, w1[0], {});
  return absl::OkStatus();
}

model::Batch Data::batch() const {
  model::Batch b;
  const int64_t B = static_cast<int64_t>(y.size());
  b.Add("x", {DType::kF32, {B, kIn}, x.data()}).Add("y", {DType::kI32, {B}, y.data()});
  return b;
}

Data MakeData(int step, int rank, int B) {
  Data d;
  Rng rng(1000003ull * static_cast<uint64_t>(step) + 17ull * static_cast<uint64_t>(rank) + 5);
  for (int b = 0; b < B; ++b) {
    float best = -1e30f;
    int label = 0;
    for (int i = 0; i < kIn; ++i) d.x.push_back(static_cast<float>(2 * rng.Uniform() - 1));
    for (int c = 0; c < kClasses; ++c) {
      float score = 0;
      for (int i = 0; i < kIn; ++i) score += d.x[b * kIn + i] * std::sin(1.0f + c * 7 + i * 3);
      if (score > best) best = score, label = c;
    }
    d.y.push_back(label);
  }
  return d;
}

}  // namespace dstrain::api::testing
