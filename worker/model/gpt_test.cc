// Whole-model checks of the GPT's backward pass. Each kernel is checked against its float64
// reference in kernels/; here the composition is checked against central finite differences of
// the model's own fp32 loss, and the PyTorch parity test (tests/parity) checks it end to end.
#include "worker/model/gpt.h"

#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/random/rng.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/device/cpu/cpu_ops.h"

namespace dstrain::model {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using tensor::View;
using ::testing::HasSubstr;

View Flat(std::vector<float>& x) { return View::Flat(x.data(), DType::kF32, x.size()); }

struct Tiny {
  GptConfig config{2, 2, 8, 11, 16, 8};
  int B = 2, T = 5;
  tensor::CpuAllocator alloc;
  device::CpuOps ops{&alloc};
  std::unique_ptr<Gpt> gpt;
  std::vector<float> params;
  std::vector<int32_t> tokens, targets;

  explicit Tiny(int n_layer = 2) {
    config.n_layer = n_layer;
    gpt = *Gpt::Create(config, &ops);
    params.assign(gpt->layout().total(), 0.f);
    gpt->InitParams(params.data(), 1);
    // Larger-than-GPT-2 weights so every path carries signal well above fp32 rounding.
    Rng rng(3);
    for (const ParamSpec& p : gpt->layout().params()) {
      const int64_t n = p.name == "wte" ? int64_t{config.vocab_size} * p.shape[1] : p.numel;
      for (int64_t i = 0; i < n; ++i) params[p.offset + i] += 0.3f * float(rng.Normal());
    }
    for (int i = 0; i < B * T; ++i) {
      tokens.push_back(rng.Below(config.vocab_size));
      targets.push_back(rng.Below(config.vocab_size));
    }
  }
  double Loss(std::vector<float> p) {
    return *gpt->Forward(Flat(p), tokens.data(), targets.data(), B, T);
  }
  int64_t ActivationsHeld() const {
    return alloc.Stats().current[int(tensor::MemoryCategory::kActivations)];
  }
  // Under `plan`, two micro-batches in flight (the tokens, then them reversed), both forwards
  // before both backwards, gradients added into `grads`: the two losses.
  std::pair<float, float> TwoMicroBatches(const ActivationPlan& plan, std::vector<float>& grads) {
    const float dloss = 1.f / (B * T);
    const std::vector<int32_t> x2(tokens.rbegin(), tokens.rend()),
        y2(targets.rbegin(), targets.rend());
    gpt->set_activation_plan(plan);
    FlatParamAccess access(gpt->layout(), Flat(params), Flat(grads));
    auto a = gpt->Forward(access, tokens.data(), targets.data(), B, T, dloss, 0);
    auto b = gpt->Forward(access, x2.data(), y2.data(), B, T, dloss, 1);
    EXPECT_THAT(a, IsOk());
    EXPECT_THAT(b, IsOk());
    EXPECT_THAT(gpt->Backward(access, 0), IsOk());
    EXPECT_THAT(gpt->Backward(access, 1), IsOk());
    return {a.ok() ? *a : NAN, b.ok() ? *b : NAN};
  }
};

TEST(Gpt, BackwardMatchesFiniteDifferences) {
  Tiny t;
  std::vector<float> grads(t.params.size(), 0.f);
  ASSERT_THAT(t.gpt->Forward(Flat(t.params), t.tokens.data(), t.targets.data(), t.B, t.T,
                             1.f / (t.B * t.T)),
              IsOk());
  ASSERT_THAT(t.gpt->Backward(Flat(t.params), Flat(grads)), IsOk());
  // Central differences in fp32 with step h: truncation O(h²) and rounding ~1e-7·loss/h. With
  // h = 1e-2 both stay near 1e-5 for a loss ~3; the tolerance below is 20x that plus 2% relative.
  const float h = 1e-2f;
  int checked = 0;
  double max_err = 0;
  for (const ParamSpec& p : t.gpt->layout().params()) {
    const int64_t n = p.name == "wte" ? int64_t{t.config.vocab_size} * p.shape[1] : p.numel;
    for (int64_t i = 0; i < n; i += 3) {
      std::vector<float> q = t.params;
      q[p.offset + i] += h;
      const double up = t.Loss(q);
      q[p.offset + i] -= 2 * h;
      const double down = t.Loss(q);
      const double fd = (up - down) / (2 * h);
      const double g = grads[p.offset + i];
      const double err = std::fabs(fd - g);
      max_err = std::max(max_err, err);
      ASSERT_LE(err, 2e-4 + 0.02 * std::fabs(fd))
          << p.name << "[" << i << "] fd=" << fd << " backward=" << g;
      ++checked;
    }
  }
  EXPECT_GT(checked, 500);
  // The padded vocabulary rows of wte get exactly zero gradient.
  const ParamSpec* wte = t.gpt->layout().Find("wte");
  for (int64_t i = int64_t{t.config.vocab_size} * 8; i < wte->numel; ++i) {
    ASSERT_EQ(grads[wte->offset + i], 0.f);
  }
}

TEST(Gpt, GradientsAccumulateAndScaleWithDloss) {
  Tiny t;
  std::vector<float> once(t.params.size(), 0.f), twice(t.params.size(), 0.f),
      scaled(t.params.size(), 0.f);
  const float d = 1.f / (t.B * t.T);
  auto run = [&](std::vector<float>& g, float dloss) {
    ASSERT_THAT(t.gpt->Forward(Flat(t.params), t.tokens.data(), t.targets.data(), t.B, t.T, dloss),
                IsOk());
    ASSERT_THAT(t.gpt->Backward(Flat(t.params), Flat(g)), IsOk());
  };
  run(once, d);
  run(twice, d);
  run(twice, d);
  run(scaled, 2 * d);
  for (size_t i = 0; i < once.size(); ++i) {
    ASSERT_NEAR(twice[i], 2 * once[i], 1e-5 + 1e-4 * std::fabs(once[i]));
    ASSERT_NEAR(scaled[i], 2 * once[i], 1e-5 + 1e-4 * std::fabs(once[i]));
  }
}

// The Model interface's forward (a Batch, a LossGrad) is the pointer forward with dloss =
// scale / (B·T·divisor): the same loss and gradients, bitwise; and a batch it cannot read is an
// error naming the array.
TEST(Gpt, BatchForwardIsThePointerForward) {
  Tiny t;
  std::vector<float> g1(t.params.size(), 0.f), g2(t.params.size(), 0.f);
  const double scale = 1024, divisor = 2;
  const float dloss = static_cast<float>(scale / (static_cast<double>(t.B) * t.T * divisor));
  auto loss1 = t.gpt->Forward(Flat(t.params), t.tokens.data(), t.targets.data(), t.B, t.T, dloss);
  ASSERT_THAT(loss1, IsOk());
  ASSERT_THAT(t.gpt->Backward(Flat(t.params), Flat(g1)), IsOk());
  Batch batch;
  batch.Add("tokens", {DType::kI32, {t.B, t.T}, t.tokens.data()})
      .Add("targets", {DType::kI32, {t.B, t.T}, t.targets.data()});
  FlatParamAccess access(t.gpt->layout(), Flat(t.params), Flat(g2));
  Model& model = *t.gpt;
  auto loss2 = model.Forward(access, batch, LossGrad{scale, 2});
  ASSERT_THAT(loss2, IsOk());
  ASSERT_THAT(model.Backward(access), IsOk());
  EXPECT_EQ(*loss1, *loss2);
  EXPECT_EQ(g1, g2);
  EXPECT_EQ(model.AsGpt(), t.gpt.get());

  Batch floats;
  std::vector<float> x(t.B * t.T);
  floats.Add("tokens", {DType::kF32, {t.B, t.T}, x.data()});
  EXPECT_THAT(model.Forward(access, floats, std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'tokens' is f32")));
  EXPECT_THAT(model.Forward(access, Batch(), std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'tokens' and 'targets'")));
  Batch tokens_only;
  tokens_only.Add("tokens", {DType::kI32, {t.B, t.T}, t.tokens.data()});
  EXPECT_THAT(model.Forward(access, tokens_only, LossGrad{}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs 'targets'")));
}

TEST(Gpt, InitialLossIsNearLogVocab) {
  GptConfig c{2, 4, 64, 256, 256, 32};
  tensor::CpuAllocator alloc;
  device::CpuOps ops(&alloc);
  auto gpt = *Gpt::Create(c, &ops);
  std::vector<float> params(gpt->layout().total());
  gpt->InitParams(params.data(), 42);
  Rng rng(1);
  std::vector<int32_t> x(4 * 32), y(4 * 32);
  for (size_t i = 0; i < x.size(); ++i) x[i] = rng.Below(256), y[i] = rng.Below(256);
  auto loss = gpt->Forward(Flat(params), x.data(), y.data(), 4, 32);
  ASSERT_THAT(loss, IsOk());
  EXPECT_NEAR(*loss, std::log(256.0), 0.1);
}

TEST(Gpt, BadInputsAreErrors) {
  Tiny t;
  std::vector<float> g(t.params.size());
  EXPECT_THAT(t.gpt->Backward(Flat(t.params), Flat(g)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("Forward")));
  std::vector<int32_t> bad = t.tokens;
  bad[3] = 11;
  EXPECT_THAT(t.gpt->Forward(Flat(t.params), bad.data(), t.targets.data(), t.B, t.T),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("position 3")));
  EXPECT_THAT(t.gpt->Forward(Flat(t.params), t.tokens.data(), nullptr, 1, 9),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("block_size")));
}

// The activation bytes the model allocates are the size table's, for the whole model and for
// every slice (the estimate uses the same function).
TEST(Gpt, AllocatesWhatTheSizeTableSays) {
  Tiny t;
  const DeviceSizes device{t.ops.AttentionStateElements(t.B, t.T, 8, 2),
                           t.ops.AttentionScratchElements(t.B, t.T, 8, 2)};
  ASSERT_THAT(t.gpt->Prepare(t.B, t.T), IsOk());
  EXPECT_EQ(t.alloc.Stats().current[int(tensor::MemoryCategory::kActivations)],
            ActivationBytes(t.config, t.B, t.T, {}, device));
  for (BlockRange r : {BlockRange{0, 1}, BlockRange{1, 2}}) {
    tensor::CpuAllocator alloc;
    device::CpuOps ops(&alloc);
    auto slice = *Gpt::Create(t.config, &ops, r);
    ASSERT_THAT(slice->Prepare(t.B, t.T), IsOk());
    EXPECT_EQ(alloc.Stats().current[int(tensor::MemoryCategory::kActivations)],
              ActivationBytes(t.config, t.B, t.T, r, device));
  }
}

// Two stages run one after the other, the first's output handed to the second and the second's
// input gradient back, give bitwise the whole model's loss and gradients (the same kernels on
// the same values in the same order; wte's gradient is the sum of its two stages' parts, which
// is where a pipeline's tied-embedding all-reduce adds them).
TEST(Gpt, TwoStagesAreTheWholeModel) {
  Tiny t;
  const float dloss = 1.f / (t.B * t.T);
  std::vector<float> grads(t.params.size(), 0.f);
  const float whole =
      *t.gpt->Forward(Flat(t.params), t.tokens.data(), t.targets.data(), t.B, t.T, dloss);
  ASSERT_THAT(t.gpt->Backward(Flat(t.params), Flat(grads)), IsOk());

  std::unique_ptr<Gpt> stage[2] = {*Gpt::Create(t.config, &t.ops, {0, 1}),
                                   *Gpt::Create(t.config, &t.ops, {1, 2})};
  std::vector<float> p[2], g[2];
  for (int s = 0; s < 2; ++s) {
    p[s].assign(stage[s]->layout().total(), 0.f);
    g[s].assign(stage[s]->layout().total(), 0.f);
    for (const ParamSpec& spec : stage[s]->layout().params()) {
      const ParamSpec* full = t.gpt->layout().Find(spec.name);
      std::copy_n(t.params.begin() + full->offset, spec.numel, p[s].begin() + spec.offset);
    }
  }
  ASSERT_THAT(stage[0]->Forward(Flat(p[0]), t.tokens.data(), nullptr, t.B, t.T, dloss), IsOk());
  ASSERT_THAT(stage[1]->Prepare(t.B, t.T), IsOk());
  t.ops.Copy(stage[1]->stage_input(), stage[0]->stage_output());
  auto loss = stage[1]->Forward(Flat(p[1]), nullptr, t.targets.data(), t.B, t.T, dloss);
  ASSERT_THAT(loss, IsOk());
  EXPECT_EQ(*loss, whole);
  ASSERT_THAT(stage[1]->Backward(Flat(p[1]), Flat(g[1])), IsOk());
  t.ops.Copy(stage[0]->stage_output_grad(), stage[1]->stage_output_grad());
  ASSERT_THAT(stage[0]->Backward(Flat(p[0]), Flat(g[0])), IsOk());

  for (const ParamSpec& spec : t.gpt->layout().params()) {
    for (int64_t i = 0; i < spec.numel; ++i) {
      float sum = 0.f;
      int holders = 0;
      for (int s = 0; s < 2; ++s) {
        if (const ParamSpec* mine = stage[s]->layout().Find(spec.name)) {
          sum += g[s][mine->offset + i];
          ++holders;
        }
      }
      ASSERT_GE(holders, 1) << spec.name;
      if (holders == 1) {
        ASSERT_EQ(sum, grads[spec.offset + i]) << spec.name << "[" << i << "]";
      } else {
        ASSERT_NEAR(sum, grads[spec.offset + i], 1e-6 + 1e-5 * std::fabs(grads[spec.offset + i]))
            << spec.name << "[" << i << "]";
      }
    }
  }
  // The head-only stage holds wte, not wpe.
  EXPECT_NE(stage[1]->layout().Find("wte"), nullptr);
  EXPECT_EQ(stage[1]->layout().Find("wpe"), nullptr);
  // A slice initialises to exactly the whole model's values.
  std::vector<float> init(stage[1]->layout().total()), whole_init(t.gpt->layout().total());
  stage[1]->InitParams(init.data(), 9);
  t.gpt->InitParams(whole_init.data(), 9);
  const ParamSpec* fcw = stage[1]->layout().Find("block.1.fcw");
  EXPECT_EQ(init[fcw->offset + 5], whole_init[t.gpt->layout().Find("block.1.fcw")->offset + 5]);
}

// Activation checkpointing recomputes each segment of blocks in its backward pass with the same
// operations on the same values: losses and gradients are bitwise those without it, at every
// interval (one block, segments of 2 and 3 over 5 blocks with a shorter last one, one segment of
// all), with two micro-batches in flight; the activations are what the size table says, fewer
// than without it, and profiling times the recomputation.
TEST(Gpt, CheckpointingGivesBitwiseTheSameGradients) {
  Tiny t(/*n_layer=*/5);
  const float dloss = 1.f / (t.B * t.T);
  const DeviceSizes device{t.ops.AttentionStateElements(t.B, t.T, 8, 2),
                           t.ops.AttentionScratchElements(t.B, t.T, 8, 2)};
  auto run = [&](const ActivationPlan& plan, std::vector<float>& grads) {
    const auto losses = t.TwoMicroBatches(plan, grads);
    EXPECT_EQ(t.ActivationsHeld(), ActivationBytes(t.config, t.B, t.T, {}, device, plan));
    return losses;
  };
  std::vector<float> plain(t.params.size(), 0.f);
  const auto plain_losses = run({2, 0}, plain);
  const int64_t plain_bytes = ActivationBytes(t.config, t.B, t.T, {}, device, {2, 0});
  for (int k : {1, 2, 3, 5}) {
    SCOPED_TRACE(absl::StrCat("interval ", k));
    std::vector<float> checkpointed(t.params.size(), 0.f);
    EXPECT_EQ(run({2, k}, checkpointed), plain_losses);
    EXPECT_EQ(plain, checkpointed);
    EXPECT_LT(ActivationBytes(t.config, t.B, t.T, {}, device, {2, k}), plain_bytes);
  }
  // Segments of 2 over 5 blocks: 3 kept outputs per buffer and one inside a segment, 2 scratch
  // sets of the per-block rows.
  const ActivationPlan two{2, 2};
  EXPECT_EQ(ActCopies(kResidual3, t.config, {}, two), 3 * 2 + 1);
  EXPECT_EQ(ActCopies(kQkv, t.config, {}, two), 2);

  ActivationPlan profiled{1, 2};
  profiled.profile = profiled.synchronize = true;
  std::vector<float> grads(t.params.size(), 0.f);
  t.gpt->set_activation_plan(profiled);
  ASSERT_THAT(t.gpt->Forward(Flat(t.params), t.tokens.data(), t.targets.data(), t.B, t.T, dloss),
              IsOk());
  EXPECT_EQ(t.gpt->recompute_seconds(), 0.0);
  ASSERT_THAT(t.gpt->Backward(Flat(t.params), Flat(grads)), IsOk());
  EXPECT_GT(t.gpt->recompute_seconds(), 0.0);
}

// Under bf16 products the rows only the products read (ActRow::product_input) are kept in bf16:
// the activations are what the size table says, half those rows' bytes fewer, from a Prepare
// before any pass (a pipeline stage's) on; and the losses and gradients are bitwise those with
// the rows kept in fp32, since the products round exactly these values, with and without
// activation checkpointing and with two micro-batches in flight.
TEST(Gpt, Bf16ProductInputsGiveBitwiseTheSameGradients) {
  Tiny t(/*n_layer=*/3);
  t.gpt->set_matmul_precision(DType::kBF16);
  const DeviceSizes device{t.ops.AttentionStateElements(t.B, t.T, 8, 2),
                           t.ops.AttentionScratchElements(t.B, t.T, 8, 2),
                           t.ops.bf16_matmul_inputs()};
  ASSERT_TRUE(device.bf16_matmul_inputs);
  auto run = [&](const ActivationPlan& plan, std::vector<float>& grads) {
    // Prepared before the first pass, as a pipeline stage is: already for bf16 products.
    t.gpt->set_activation_plan(plan);
    EXPECT_THAT(t.gpt->Prepare(t.B, t.T), IsOk());
    const int64_t want = ActivationBytes(t.config, t.B, t.T, {}, device, plan, DType::kBF16);
    EXPECT_EQ(t.ActivationsHeld(), want);
    const auto losses = t.TwoMicroBatches(plan, grads);
    EXPECT_EQ(t.ActivationsHeld(), want);
    return losses;
  };
  for (int k : {0, 1, 2}) {
    SCOPED_TRACE(absl::StrCat("checkpoint interval ", k));
    ActivationPlan fp32{2, k}, bf16{2, k};
    fp32.bf16_matmul_inputs = false;
    std::vector<float> g32(t.params.size(), 0.f), g16(t.params.size(), 0.f);
    EXPECT_EQ(run(fp32, g32), run(bf16, g16));
    EXPECT_EQ(g32, g16);
    int64_t product_inputs = 0;
    for (int row = 0; row < kNumGptActivations; ++row) {
      if (!kGptActivations[row].product_input) continue;
      EXPECT_EQ(ActDType(row, bf16, DType::kBF16, device), DType::kBF16);
      EXPECT_EQ(ActDType(row, bf16, DType::kF32, device), DType::kF32);
      product_inputs += ActCopies(row, t.config, {}, bf16) *
                        ActElements(row, t.config, t.B, t.T, device) * int64_t{2};
    }
    EXPECT_GT(product_inputs, 0);
    EXPECT_EQ(ActivationBytes(t.config, t.B, t.T, {}, device, fp32, DType::kBF16) -
                  ActivationBytes(t.config, t.B, t.T, {}, device, bf16, DType::kBF16),
              product_inputs);
    // fp32 products keep every row in fp32 whatever the plan says.
    EXPECT_EQ(ActivationBytes(t.config, t.B, t.T, {}, device, bf16, DType::kF32),
              ActivationBytes(t.config, t.B, t.T, {}, device, fp32, DType::kBF16));
  }
}

// Micro-batches in flight in separate buffers (a pipeline stage's 1F1B) give the gradients of
// running them one after the other, bitwise: the backward passes add in the same order.
TEST(Gpt, BuffersHoldMicroBatchesInFlight) {
  Tiny t;
  const float dloss = 1.f / (t.B * t.T);
  std::vector<int32_t> x2(t.tokens.rbegin(), t.tokens.rend()),
      y2(t.targets.rbegin(), t.targets.rend());
  std::vector<float> sequential(t.params.size(), 0.f), buffered(t.params.size(), 0.f);
  for (int i = 0; i < 2; ++i) {
    const std::vector<int32_t>& x = i == 0 ? t.tokens : x2;
    const std::vector<int32_t>& y = i == 0 ? t.targets : y2;
    ASSERT_THAT(t.gpt->Forward(Flat(t.params), x.data(), y.data(), t.B, t.T, dloss), IsOk());
    ASSERT_THAT(t.gpt->Backward(Flat(t.params), Flat(sequential)), IsOk());
  }
  t.gpt->set_activation_plan({2, 0});
  FlatParamAccess access(t.gpt->layout(), Flat(t.params), Flat(buffered));
  ASSERT_THAT(t.gpt->Forward(access, t.tokens.data(), t.targets.data(), t.B, t.T, dloss, 0),
              IsOk());
  ASSERT_THAT(t.gpt->Forward(access, x2.data(), y2.data(), t.B, t.T, dloss, 1), IsOk());
  ASSERT_THAT(t.gpt->Backward(access, 0), IsOk());
  EXPECT_THAT(t.gpt->Backward(access, 0),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("Forward")));
  ASSERT_THAT(t.gpt->Backward(access, 1), IsOk());
  EXPECT_EQ(sequential, buffered);
  EXPECT_THAT(t.gpt->Forward(access, x2.data(), y2.data(), t.B, t.T, dloss, 2),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("buffer 2 of 2")));
}

}  // namespace
}  // namespace dstrain::model
