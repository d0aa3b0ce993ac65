// Whole-model checks of the GPT's backward pass. Each kernel is checked against its float64
// reference in kernels/; here the composition is checked against central finite differences of
// the model's own fp32 loss, and the PyTorch parity test (tests/parity) checks it end to end.
#include "worker/model/gpt.h"

#include <cmath>
#include <vector>

#include "common/random/rng.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"

namespace dstrain::model {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

struct Tiny {
  GptConfig config{2, 2, 8, 11, 16, 8};
  int B = 2, T = 5;
  tensor::CpuAllocator alloc;
  std::unique_ptr<Gpt> gpt;
  std::vector<float> params;
  std::vector<int32_t> tokens, targets;

  Tiny() {
    gpt = *Gpt::Create(config, &alloc);
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
  double Loss(const std::vector<float>& p) {
    return *gpt->Forward(p.data(), tokens.data(), targets.data(), B, T);
  }
};

TEST(Gpt, BackwardMatchesFiniteDifferences) {
  Tiny t;
  std::vector<float> grads(t.params.size(), 0.f);
  ASSERT_THAT(t.gpt->Forward(t.params.data(), t.tokens.data(), t.targets.data(), t.B, t.T,
                             1.f / (t.B * t.T)),
              IsOk());
  ASSERT_THAT(t.gpt->Backward(t.params.data(), grads.data()), IsOk());
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
    ASSERT_THAT(t.gpt->Forward(t.params.data(), t.tokens.data(), t.targets.data(), t.B, t.T, dloss),
                IsOk());
    ASSERT_THAT(t.gpt->Backward(t.params.data(), g.data()), IsOk());
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

TEST(Gpt, InitialLossIsNearLogVocab) {
  GptConfig c{2, 4, 64, 256, 256, 32};
  tensor::CpuAllocator alloc;
  auto gpt = *Gpt::Create(c, &alloc);
  std::vector<float> params(gpt->layout().total());
  gpt->InitParams(params.data(), 42);
  Rng rng(1);
  std::vector<int32_t> x(4 * 32), y(4 * 32);
  for (size_t i = 0; i < x.size(); ++i) x[i] = rng.Below(256), y[i] = rng.Below(256);
  auto loss = gpt->Forward(params.data(), x.data(), y.data(), 4, 32);
  ASSERT_THAT(loss, IsOk());
  EXPECT_NEAR(*loss, std::log(256.0), 0.1);
}

TEST(Gpt, BadInputsAreErrors) {
  Tiny t;
  std::vector<float> g(t.params.size());
  EXPECT_THAT(t.gpt->Backward(t.params.data(), g.data()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("Forward")));
  std::vector<int32_t> bad = t.tokens;
  bad[3] = 11;
  EXPECT_THAT(t.gpt->Forward(t.params.data(), bad.data(), t.targets.data(), t.B, t.T),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("position 3")));
  EXPECT_THAT(t.gpt->Forward(t.params.data(), t.tokens.data(), nullptr, 1, 9),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("block_size")));
}

}  // namespace
}  // namespace dstrain::model
