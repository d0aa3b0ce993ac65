#include "kernels/crossentropy/crossentropy.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"
#include "kernels/crossentropy/crossentropy_reference.h"

namespace dstrain::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::RandomFloats;
using testing::RandomTokens;
using testing::ToDouble;

struct Shape {
  int64_t N;
  int V, Vp;
};

// V = 1 (loss 0), odd V and padding for every vector tail, and the three real vocabularies.
const Shape kShapes[] = {{1, 1, 1},       {3, 7, 16},        {5, 33, 40}, {4, 256, 256},
                         {6, 8192, 8192}, {2, 50257, 50304}, {1, 17, 17}};

// Logits in [40, 60): far from 0, so a missing max subtraction would overflow exp.
std::vector<float> Logits(const Shape& s, uint32_t seed) {
  auto z = RandomFloats(s.N * s.Vp, seed, 40.f, 60.f);
  // Padded columns hold NaN: the kernel must never read them.
  for (int64_t n = 0; n < s.N; ++n) {
    for (int j = s.V; j < s.Vp; ++j) z[n * s.Vp + j] = std::numeric_limits<float>::quiet_NaN();
  }
  return z;
}

// Loss = log S + m − z_t with m, z_t ≈ 50: the float additions round at ulp(64)/2 ≈ 4e-6, and
// log S carries exp's and the sum's ~1e-7 relative error.
constexpr double kLossAbsTol = 1e-5, kLossRelTol = 1e-6;
// dlogits = p·scale or (p − 1)·scale: p carries exp's 1.2e-7 and the sum's ~1e-7 relative error
// plus two roundings; the absolute part covers p − 1 ≈ 0 for a confident target.
constexpr double kGradRelTol = 1e-6;
double GradAbsTol(float scale) { return 1e-7 * std::fabs(scale); }

class CrossEntropyTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

TEST_P(CrossEntropyTest, ForwardBackwardMatchesReference) {
  const float scale = 1.f / 3.f;
  for (const Shape& s : kShapes) {
    auto z = Logits(s, 1);
    const auto targets = RandomTokens(s.N, 2, s.V);
    const auto zd = ToDouble(z);
    std::vector<float> losses(s.N);
    CrossEntropyForwardBackward(losses.data(), z.data(), targets.data(), s.N, s.V, s.Vp, scale);
    std::vector<double> want_loss(s.N), want_grad(s.N * s.Vp);
    CrossEntropyForwardReference(want_loss.data(), zd.data(), targets.data(), s.N, s.V, s.Vp);
    CrossEntropyBackwardReference(want_grad.data(), zd.data(), targets.data(), s.N, s.V, s.Vp,
                                  scale);
    EXPECT_TRUE(AllClose(losses, want_loss, kLossAbsTol, kLossRelTol)) << s.V;
    EXPECT_TRUE(AllClose(z, want_grad, GradAbsTol(scale), kGradRelTol)) << s.V;
  }
}

TEST_P(CrossEntropyTest, ForwardOnlyLeavesLogitsUntouched) {
  for (const Shape& s : kShapes) {
    auto z = Logits(s, 3);
    const auto original = z;
    const auto targets = RandomTokens(s.N, 4, s.V);
    std::vector<float> losses(s.N);
    CrossEntropyForwardBackward(losses.data(), z.data(), targets.data(), s.N, s.V, s.Vp, 0.f);
    EXPECT_TRUE(BitwiseEqual(z, original)) << s.V;
    std::vector<double> want(s.N);
    CrossEntropyForwardReference(want.data(), ToDouble(original).data(), targets.data(), s.N, s.V,
                                 s.Vp);
    EXPECT_TRUE(AllClose(losses, want, kLossAbsTol, kLossRelTol)) << s.V;
  }
}

TEST_P(CrossEntropyTest, NullLossesAndExtremeLogits) {
  // One logit dominates by 1e4: the softmax saturates to exactly one-hot without NaN.
  const Shape s{2, 37, 48};
  std::vector<float> z(s.N * s.Vp, 0.f);
  z[5] = 1e4f;          // row 0: target 5 is certain
  z[s.Vp + 9] = -1e4f;  // row 1: target 9 is impossible
  const std::vector<int32_t> targets = {5, 9};
  std::vector<float> losses(2);
  auto z2 = z;
  CrossEntropyForwardBackward(losses.data(), z.data(), targets.data(), s.N, s.V, s.Vp, 1.f);
  CrossEntropyForwardBackward(nullptr, z2.data(), targets.data(), s.N, s.V, s.Vp, 1.f);
  EXPECT_TRUE(BitwiseEqual(z, z2));
  EXPECT_NEAR(losses[0], 0.f, 1e-6);
  EXPECT_NEAR(losses[1], 1e4f + std::log(36.f), 1e-2);
  for (float g : z) ASSERT_TRUE(std::isfinite(g));
  EXPECT_NEAR(z[5], 0.f, 1e-6);
  EXPECT_NEAR(z[s.Vp + 9], -1.f, 1e-6);
}

TEST_P(CrossEntropyTest, BitwiseIdenticalAcrossThreadCounts) {
  const Shape s{64, 8192, 8192};
  const auto z0 = Logits(s, 5);
  const auto targets = RandomTokens(s.N, 6, s.V);
  std::vector<float> first_z, first_loss;
  for (int threads : {1, 2, 3}) {
    testing::ScopedThreads scoped(threads);
    auto z = z0;
    std::vector<float> losses(s.N);
    CrossEntropyForwardBackward(losses.data(), z.data(), targets.data(), s.N, s.V, s.Vp, 0.5f);
    if (first_z.empty()) {
      first_z = z;
      first_loss = losses;
    } else {
      EXPECT_TRUE(BitwiseEqual(z, first_z));
      EXPECT_TRUE(BitwiseEqual(losses, first_loss));
    }
  }
}

TEST_P(CrossEntropyTest, ZeroRowsIsANoOp) {
  CrossEntropyForwardBackward(nullptr, nullptr, nullptr, 0, 10, 16, 1.f);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, CrossEntropyTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

TEST(MeanLossTest, AveragesInDouble) {
  EXPECT_EQ(MeanLoss(nullptr, 0), 0.0);
  const std::vector<float> l = {1.f, 2.f, 4.f};
  EXPECT_DOUBLE_EQ(MeanLoss(l.data(), 3), 7.0 / 3.0);
}

// The float64 backward reference equals central differences of scale·Σ loss_n through the
// float64 forward; padded columns have zero gradient.
TEST(CrossEntropyReferenceTest, BackwardMatchesFiniteDifferences) {
  const int64_t N = 2;
  const int V = 5, Vp = 8;
  const double scale = 0.7;
  const auto z = ToDouble(RandomFloats(N * Vp, 7, -3.f, 3.f));
  const auto targets = RandomTokens(N, 8, V);
  std::vector<double> grad(N * Vp);
  CrossEntropyBackwardReference(grad.data(), z.data(), targets.data(), N, V, Vp, scale);
  const auto fd = testing::FiniteDifferenceGradient(
      [&](const std::vector<double>& zz) {
        std::vector<double> losses(N);
        CrossEntropyForwardReference(losses.data(), zz.data(), targets.data(), N, V, Vp);
        return scale * (losses[0] + losses[1]);
      },
      z);
  for (int64_t i = 0; i < N * Vp; ++i) EXPECT_NEAR(grad[i], fd[i], 1e-8) << i;
}

}  // namespace
}  // namespace dstrain::kernels
