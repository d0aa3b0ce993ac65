// The float64 attention reference checks itself: its backward pass equals central differences of
// L = Σ out·dout through its forward pass.
#include "kernels/attention/cuda/attention_reference_f64.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace dstrain::kernels::gpu {
namespace {

TEST(AttentionReferenceTest, BackwardMatchesFiniteDifferences) {
  const int B = 2, T = 4, C = 6, NH = 2;
  std::mt19937 gen(1);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> qkv(B * T * 3 * C), dout(B * T * C);
  for (double& x : qkv) x = u(gen);
  for (double& x : dout) x = u(gen);
  auto loss = [&](const std::vector<double>& x) {
    std::vector<double> out(B * T * C), att(B * NH * T * T);
    AttentionForwardReference(out.data(), att.data(), x.data(), B, T, C, NH);
    double l = 0;
    for (size_t i = 0; i < out.size(); ++i) l += out[i] * dout[i];
    return l;
  };
  std::vector<double> out(B * T * C), att(B * NH * T * T), dqkv(qkv.size());
  AttentionForwardReference(out.data(), att.data(), qkv.data(), B, T, C, NH);
  AttentionBackwardReference(dqkv.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
  const double h = 1e-6;
  for (size_t i = 0; i < qkv.size(); ++i) {
    std::vector<double> plus = qkv, minus = qkv;
    plus[i] += h;
    minus[i] -= h;
    EXPECT_NEAR(dqkv[i], (loss(plus) - loss(minus)) / (2 * h), 1e-8) << i;
  }
  // Causal: each row of att sums to 1 over j <= i and is 0 after.
  for (int r = 0; r < B * NH * T; ++r) {
    const int i = r % T;
    double sum = 0;
    for (int j = 0; j < T; ++j) {
      if (j > i) {
        EXPECT_EQ(att[r * T + j], 0.0);
      }
      sum += att[r * T + j];
    }
    EXPECT_NEAR(sum, 1.0, 1e-12);
  }
}

}  // namespace
}  // namespace dstrain::kernels::gpu
