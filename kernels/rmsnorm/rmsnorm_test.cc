#include "kernels/rmsnorm/rmsnorm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cast/cast.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"
#include "kernels/rmsnorm/rmsnorm_reference.h"

namespace dstrain::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::RandomFloats;
using testing::ToDouble;

struct Shape {
  int64_t N;
  int C;
};

// C = 1, odd C for vector tails, N not a multiple of the 32-row chunk, the GPT-2 width, and a
// Llama-7B width (4096) at a few rows.
const Shape kShapes[] = {{1, 1},    {3, 7},      {5, 33},    {7, 16},   {70, 65},
                         {33, 768}, {2048, 256}, {256, 768}, {40, 4096}};

constexpr float kEps = 1e-5f;

// Inputs U[-2, 2): rms ≈ 1.15, rstd ≈ 0.87, |n| = |x·rstd| <= ~1.8.
std::vector<float> Input(int64_t n, uint32_t seed) { return RandomFloats(n, seed, -2.f, 2.f); }

// Tolerances.
// rstd: Σx² is a sum of non-negative terms, so its rounding errors do not cancel against the
// value: each of the ≤ C/(2·lanes) sequential additions per lane costs ≤ 2^-24 relative, and they
// behave like a random walk (the scalar build, 1 lane, C = 4096: 2048 additions, worst case
// 1.2e-4 but ~sqrt(2048)·6e-8 ≈ 3e-6 in practice; measured ≤ 7e-7 on these shapes). rstd halves
// the relative error of Σx²; 2e-6 leaves room and still catches any missed or doubled element
// (≥ 1/C·(x²/rms²) relative, ≥ 2e-5 for C = 4096 at |x| ≥ 0.3).
constexpr double kStatsRelTol = 2e-6;
// out = (x·rstd)·w: rstd's error plus two roundings (1.2e-7) relative to |out| <= 1.8.
constexpr double kForwardAbsTol = 1e-6, kForwardRelTol = 3e-6;
// dinp = rstd·(g − n·mean(g·n)): |g| <= 2, the mean a sum of C terms of either sign divided by
// C, so a few 1e-7 absolute in each term, times rstd ≈ 0.9.
constexpr double kDinpAbsTol = 3e-6, kDinpRelTol = 3e-6;
// dweight sums N terms |dout·n| <= 1.8 in float, in chunks of 32 rows: as layernorm_test.cc,
// 1e-6·N is generous and still catches any missed row (>= 1e-3).
double ParamGradAbsTol(int64_t N) { return 1e-6 * static_cast<double>(N) + 1e-6; }

class RmsNormTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

// The bf16 output is the fp32 output rounded (kernels/cast's FloatToHalf), bit for bit, with the
// same rstd; nothing past the end is written.
TEST_P(RmsNormTest, Bf16OutputIsTheFp32OutputRounded) {
  for (const Shape& s : kShapes) {
    const int64_t n = s.N * s.C;
    const auto x = RandomFloats(n, 31, -3.f, 3.f), w = RandomFloats(s.C, 32);
    std::vector<float> out(n), rstd(s.N), rstd16(s.N);
    RmsNormForward(out.data(), rstd.data(), x.data(), w.data(), s.N, s.C, kEps);
    std::vector<uint16_t> want(n), got(n + 1, 0xabcd);
    FloatToHalf(DType::kBF16, want.data(), out.data(), n);
    RmsNormForward(got.data(), rstd16.data(), x.data(), w.data(), s.N, s.C, kEps);
    EXPECT_EQ(std::vector<uint16_t>(got.begin(), got.begin() + n), want) << s.N << "x" << s.C;
    EXPECT_TRUE(BitwiseEqual(rstd16, rstd));
    EXPECT_EQ(got[n], 0xabcd);
  }
}

TEST_P(RmsNormTest, ForwardMatchesReference) {
  double worst_rstd = 0;
  for (const Shape& s : kShapes) {
    const int64_t n = s.N * s.C;
    const auto x = Input(n, 1), w = RandomFloats(s.C, 2);
    std::vector<float> out(n + 1, -9.f), rstd(s.N);
    RmsNormForward(out.data(), rstd.data(), x.data(), w.data(), s.N, s.C, kEps);
    std::vector<double> want(n), want_rstd(s.N);
    RmsNormForwardReference(want.data(), want_rstd.data(), ToDouble(x).data(), ToDouble(w).data(),
                            s.N, s.C, kEps);
    EXPECT_TRUE(AllClose(out.data(), want.data(), n, kForwardAbsTol, kForwardRelTol)) << s.C;
    EXPECT_TRUE(AllClose(rstd, want_rstd, 0, kStatsRelTol)) << s.C;
    EXPECT_EQ(out[n], -9.f);
    for (int64_t i = 0; i < s.N; ++i) {
      worst_rstd = std::max(worst_rstd, std::fabs(rstd[i] - want_rstd[i]) / want_rstd[i]);
    }
  }
  std::ostringstream text;
  text << worst_rstd;
  RecordProperty("measured_rstd_rel_error", text.str());
}

TEST_P(RmsNormTest, ForwardWithoutStatsAndInPlace) {
  const Shape s{9, 40};
  const auto x = Input(s.N * s.C, 4), w = RandomFloats(s.C, 5);
  std::vector<float> out(s.N * s.C), with_stats(s.N * s.C), rstd(s.N);
  RmsNormForward(out.data(), nullptr, x.data(), w.data(), s.N, s.C, kEps);
  RmsNormForward(with_stats.data(), rstd.data(), x.data(), w.data(), s.N, s.C, kEps);
  EXPECT_TRUE(BitwiseEqual(out, with_stats));
  std::vector<float> in_place = x;
  RmsNormForward(in_place.data(), nullptr, in_place.data(), w.data(), s.N, s.C, kEps);
  EXPECT_TRUE(BitwiseEqual(in_place, out));
}

// eps matters where Σx²/C is small: a zero row gives rstd = 1/sqrt(eps), out = 0, and
// dinp = rstd·dout·w; a row of 1e-3 (mean square 1e-6, below eps) is damped, not blown up.
TEST_P(RmsNormTest, SmallRowsAreGovernedByEps) {
  const int C = 19;
  std::vector<float> x(2 * C, 0.f);
  for (int c = 0; c < C; ++c) x[C + c] = (c % 2 ? 1e-3f : -1e-3f);
  const auto w = RandomFloats(C, 6), dout = RandomFloats(2 * C, 7);
  std::vector<float> out(2 * C), rstd(2), dinp(2 * C, 0.f), dw(C, 0.f);
  RmsNormForward(out.data(), rstd.data(), x.data(), w.data(), 2, C, kEps);
  RmsNormBackward(dinp.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), 2, C);
  std::vector<double> want(2 * C), want_rstd(2), want_dinp(2 * C, 0.0), want_dw(C, 0.0);
  const auto xd = ToDouble(x), wd = ToDouble(w);
  RmsNormForwardReference(want.data(), want_rstd.data(), xd.data(), wd.data(), 2, C, kEps);
  RmsNormBackwardReference(want_dinp.data(), want_dw.data(), ToDouble(dout).data(), xd.data(),
                           wd.data(), want_rstd.data(), 2, C);
  EXPECT_TRUE(AllClose(rstd, want_rstd, 0, kStatsRelTol));
  EXPECT_TRUE(AllClose(out, want, kForwardAbsTol, kForwardRelTol));
  // dinp here is ~rstd = 316 times larger than in the other tests: relative tolerance.
  EXPECT_TRUE(AllClose(dinp, want_dinp, 1e-5, 3e-6));
  EXPECT_TRUE(AllClose(dw, want_dw, 1e-6, 0));
  for (int c = 0; c < C; ++c) EXPECT_EQ(out[c], 0.f);
}

TEST_P(RmsNormTest, BackwardAccumulatesOverTwoMicroSteps) {
  for (const Shape& s : kShapes) {
    const int64_t n = s.N * s.C;
    const auto w = RandomFloats(s.C, 7);
    // Gradients start from non-zero values: everything must accumulate.
    auto dinp = RandomFloats(n, 9), dw = RandomFloats(s.C, 10);
    auto want_dinp = ToDouble(dinp), want_dw = ToDouble(dw);
    for (int step = 0; step < 2; ++step) {
      const auto x = Input(n, 12 + step), dout = RandomFloats(n, 14 + step);
      std::vector<float> out(n), rstd(s.N);
      RmsNormForward(out.data(), rstd.data(), x.data(), w.data(), s.N, s.C, kEps);
      RmsNormBackward(dinp.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), s.N,
                      s.C);
      std::vector<double> ref_out(n), ref_rstd(s.N);
      const auto xd = ToDouble(x), wd = ToDouble(w);
      RmsNormForwardReference(ref_out.data(), ref_rstd.data(), xd.data(), wd.data(), s.N, s.C,
                              kEps);
      RmsNormBackwardReference(want_dinp.data(), want_dw.data(), ToDouble(dout).data(), xd.data(),
                               wd.data(), ref_rstd.data(), s.N, s.C);
    }
    EXPECT_TRUE(AllClose(dinp, want_dinp, kDinpAbsTol, kDinpRelTol)) << s.N << "x" << s.C;
    EXPECT_TRUE(AllClose(dw, want_dw, ParamGradAbsTol(2 * s.N), 0)) << s.N << "x" << s.C;
  }
}

// All outputs, dweight included, are bitwise identical for 1, 2 and 3 threads.
TEST_P(RmsNormTest, BitwiseIdenticalAcrossThreadCounts) {
  const Shape s{1000, 200};
  const int64_t n = s.N * s.C;
  const auto x = Input(n, 20), w = RandomFloats(s.C, 21), dout = RandomFloats(n, 23);
  std::vector<float> first[4];
  for (int threads : {1, 2, 3}) {
    testing::ScopedThreads scoped(threads);
    std::vector<float> out(n), rstd(s.N), dinp(n, 0.f), dw(s.C, 0.f);
    RmsNormForward(out.data(), rstd.data(), x.data(), w.data(), s.N, s.C, kEps);
    RmsNormBackward(dinp.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), s.N, s.C);
    std::vector<float> got[4] = {out, rstd, dinp, dw};
    for (int k = 0; k < 4; ++k) {
      if (threads == 1) {
        first[k] = got[k];
      } else {
        EXPECT_TRUE(BitwiseEqual(got[k], first[k])) << "output " << k << " threads " << threads;
      }
    }
  }
}

TEST_P(RmsNormTest, ZeroRowsIsANoOp) {
  std::vector<float> w(8, 1.f), dw(8, 3.f);
  RmsNormForward(static_cast<float*>(nullptr), nullptr, nullptr, w.data(), 0, 8, kEps);
  RmsNormBackward(nullptr, dw.data(), nullptr, nullptr, w.data(), nullptr, 0, 8);
  EXPECT_EQ(dw, std::vector<float>(8, 3.f));
}

INSTANTIATE_TEST_SUITE_P(AllIsas, RmsNormTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

// The float64 backward reference equals central differences of L = Σ out·dout through the
// float64 forward, for inp and weight. With h = 1e-6 the difference quotient is good to ~1e-9
// here (rounding ~1e-16/h, truncation h²·|L'''|).
TEST(RmsNormReferenceTest, BackwardMatchesFiniteDifferences) {
  const int64_t N = 3;
  const int C = 5;
  const double eps = 1e-5;
  const auto x = ToDouble(RandomFloats(N * C, 30, -2.f, 2.f));
  const auto w = ToDouble(RandomFloats(C, 31)), dout = ToDouble(RandomFloats(N * C, 33));
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& ww) {
    std::vector<double> out(N * C), rstd(N);
    RmsNormForwardReference(out.data(), rstd.data(), xx.data(), ww.data(), N, C, eps);
    double l = 0;
    for (int64_t i = 0; i < N * C; ++i) l += out[i] * dout[i];
    return l;
  };
  std::vector<double> out(N * C), rstd(N);
  RmsNormForwardReference(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  std::vector<double> dx(N * C, 0.0), dw(C, 0.0);
  RmsNormBackwardReference(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N,
                           C);
  const auto fd_x = testing::FiniteDifferenceGradient(
      [&](const std::vector<double>& v) { return loss(v, w); }, x);
  const auto fd_w = testing::FiniteDifferenceGradient(
      [&](const std::vector<double>& v) { return loss(x, v); }, w);
  for (int64_t i = 0; i < N * C; ++i) EXPECT_NEAR(dx[i], fd_x[i], 1e-8) << i;
  for (int c = 0; c < C; ++c) EXPECT_NEAR(dw[c], fd_w[c], 1e-8) << c;
}

}  // namespace
}  // namespace dstrain::kernels
