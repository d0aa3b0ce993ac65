#include "kernels/gelu/gelu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cast/cast.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"
#include "kernels/gelu/gelu_reference.h"

namespace dstrain::kernels {
namespace {

using testing::AllClose;
using testing::RandomFloats;
using testing::ToDouble;

// Errors come from exp's ~1.2e-7 relative error and a handful of float roundings, so they scale
// like 1e-7 · max(1, |x|): measured (DenseSweep, recorded in test.xml) forward ≤ 5.2e-7 absolute
// at |x| = 12 and ≤ 1e-6 relative in the negative tail, backward ≤ 2e-7 absolute. The absolute
// part of the tolerance covers results that are tiny (negative tail) or cross zero (the gradient
// near x ≈ -0.75), where relative error is meaningless.
constexpr double kForwardAbsTol = 1e-7, kForwardRelTol = 2e-6;
constexpr double kBackwardAbsTol = 1e-7, kBackwardRelTol = 1e-6;

const int64_t kSizes[] = {0, 1, 7, 33, 1000, (int64_t{1} << 17) + 5};

class GeluTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

TEST_P(GeluTest, ForwardMatchesReference) {
  for (int64_t n : kSizes) {
    const auto x = RandomFloats(n, 1, -6.f, 6.f);
    std::vector<float> out(n + 3, -7.f);
    GeluForward(out.data(), x.data(), n);
    std::vector<double> want(n);
    GeluForwardReference(want.data(), ToDouble(x).data(), n);
    EXPECT_TRUE(AllClose(out.data(), want.data(), n, kForwardAbsTol, kForwardRelTol)) << n;
    EXPECT_EQ(out[n], -7.f);
  }
}

// The bf16 output is the fp32 output rounded (kernels/cast's FloatToHalf), bit for bit, saturated
// tails and vector tails included; nothing past the end is written.
TEST_P(GeluTest, Bf16OutputIsTheFp32OutputRounded) {
  for (int64_t n : kSizes) {
    const auto x = RandomFloats(n, 4, -12.f, 12.f);
    std::vector<float> out(n);
    GeluForward(out.data(), x.data(), n);
    std::vector<uint16_t> want(n), got(n + 3, 0xabcd);
    FloatToHalf(DType::kBF16, want.data(), out.data(), n);
    GeluForward(got.data(), x.data(), n);
    EXPECT_EQ(std::vector<uint16_t>(got.begin(), got.begin() + n), want) << n;
    EXPECT_EQ(got[n], 0xabcd);
  }
}

TEST_P(GeluTest, BackwardMatchesReferenceAndOverwrites) {
  for (int64_t n : kSizes) {
    const auto x = RandomFloats(n, 2, -6.f, 6.f), dy = RandomFloats(n, 3);
    std::vector<float> dx(n + 3, 99.f);  // garbage that must be overwritten, not added to
    GeluBackward(dx.data(), x.data(), dy.data(), n);
    std::vector<double> want(n);
    GeluBackwardReference(want.data(), ToDouble(x).data(), ToDouble(dy).data(), n);
    EXPECT_TRUE(AllClose(dx.data(), want.data(), n, kBackwardAbsTol, kBackwardRelTol)) << n;
    EXPECT_EQ(dx[n], 99.f);
  }
}

// A dense sweep through the interesting range, including the saturated tails where exp clamps.
TEST_P(GeluTest, DenseSweepIncludingSaturation) {
  const int64_t n = 200001;
  std::vector<float> x(n), ones(n, 1.f), y(n), g(n);
  for (int64_t i = 0; i < n; ++i) x[i] = -12.f + 24.f * i / (n - 1);
  GeluForward(y.data(), x.data(), n);
  GeluBackward(g.data(), x.data(), ones.data(), n);
  std::vector<double> want_y(n), want_g(n);
  GeluForwardReference(want_y.data(), ToDouble(x).data(), n);
  GeluBackwardReference(want_g.data(), ToDouble(x).data(), ToDouble(ones).data(), n);
  EXPECT_TRUE(AllClose(y.data(), want_y.data(), n, kForwardAbsTol, kForwardRelTol));
  EXPECT_TRUE(AllClose(g.data(), want_g.data(), n, kBackwardAbsTol, kBackwardRelTol));
  // Record the measured error (see gelu.h): relative where |want| >= 1e-3, absolute everywhere.
  double fwd_rel = 0, fwd_abs = 0, bwd_rel = 0, bwd_abs = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double ey = std::fabs(y[i] - want_y[i]), eg = std::fabs(g[i] - want_g[i]);
    fwd_abs = std::max(fwd_abs, ey);
    bwd_abs = std::max(bwd_abs, eg);
    if (std::fabs(want_y[i]) >= 1e-3) fwd_rel = std::max(fwd_rel, ey / std::fabs(want_y[i]));
    if (std::fabs(want_g[i]) >= 1e-3) bwd_rel = std::max(bwd_rel, eg / std::fabs(want_g[i]));
  }
  std::ostringstream text;
  text << "forward abs " << fwd_abs << " rel " << fwd_rel << "; backward abs " << bwd_abs << " rel "
       << bwd_rel;
  RecordProperty("measured_error", text.str());
  // Far tails: gelu(x) -> 0 for x -> -inf and -> x for x -> +inf, gradient -> 0 and 1. The exp
  // clamp leaves ~1e-27 instead of 0 for x = -1e4: harmless, so "zero" here means < 1e-20.
  std::vector<float> tails = {-1e4f, -100.f, 100.f, 1e4f}, ty(4), tg(4);
  std::vector<float> tones(4, 1.f);
  GeluForward(ty.data(), tails.data(), 4);
  GeluBackward(tg.data(), tails.data(), tones.data(), 4);
  EXPECT_NEAR(ty[0], 0.f, 1e-20);
  EXPECT_NEAR(ty[1], 0.f, 1e-20);
  EXPECT_EQ(ty[2], 100.f);
  EXPECT_EQ(ty[3], 1e4f);
  EXPECT_NEAR(tg[0], 0.f, 1e-20);
  EXPECT_NEAR(tg[1], 0.f, 1e-20);
  EXPECT_EQ(tg[2], 1.f);
  EXPECT_EQ(tg[3], 1.f);
}

TEST_P(GeluTest, OutputsMayAliasInputs) {
  const int64_t n = 517;
  auto x = RandomFloats(n, 4, -3.f, 3.f);
  auto dy = RandomFloats(n, 5);
  std::vector<double> want_y(n), want_g(n);
  GeluForwardReference(want_y.data(), ToDouble(x).data(), n);
  GeluBackwardReference(want_g.data(), ToDouble(x).data(), ToDouble(dy).data(), n);
  GeluBackward(dy.data(), x.data(), dy.data(), n);  // dinp over dout
  GeluForward(x.data(), x.data(), n);               // out over inp
  EXPECT_TRUE(AllClose(x.data(), want_y.data(), n, kForwardAbsTol, kForwardRelTol));
  EXPECT_TRUE(AllClose(dy.data(), want_g.data(), n, kBackwardAbsTol, kBackwardRelTol));
}

// Element-wise: the split across threads cannot change any value.
TEST_P(GeluTest, BitwiseIdenticalAcrossThreadCounts) {
  const int64_t n = (int64_t{1} << 20) + 3;
  const auto x = RandomFloats(n, 6, -6.f, 6.f), dy = RandomFloats(n, 7);
  std::vector<float> first_y, first_g;
  for (int threads : {1, 2, 3}) {
    testing::ScopedThreads scoped(threads);
    std::vector<float> y(n), g(n);
    GeluForward(y.data(), x.data(), n);
    GeluBackward(g.data(), x.data(), dy.data(), n);
    if (first_y.empty()) {
      first_y = y;
      first_g = g;
    } else {
      EXPECT_TRUE(testing::BitwiseEqual(y, first_y)) << threads;
      EXPECT_TRUE(testing::BitwiseEqual(g, first_g)) << threads;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, GeluTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

// The float64 backward reference agrees with central differences of the float64 forward, which
// proves the reference derivative. Error of a central difference with h = 1e-5: truncation
// h²·|f'''|/6 ~ 1e-11 plus rounding ~1e-16/h ~ 1e-11.
TEST(GeluReferenceTest, BackwardMatchesFiniteDifferences) {
  for (double x0 = -5.0; x0 <= 5.0; x0 += 0.173) {
    double dx, one = 1.0;
    GeluBackwardReference(&dx, &x0, &one, 1);
    const auto fd = testing::FiniteDifferenceGradient(
        [](const std::vector<double>& v) {
          double y;
          GeluForwardReference(&y, v.data(), 1);
          return y;
        },
        {x0}, 1e-5);
    EXPECT_NEAR(dx, fd[0], 1e-9) << "x=" << x0;
  }
}

}  // namespace
}  // namespace dstrain::kernels
