#include "kernels/layernorm/layernorm.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cast/cast.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"
#include "kernels/layernorm/layernorm_reference.h"

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

// C = 1 (zero variance), odd C for vector tails, N not a multiple of the 32-row chunk, and the
// two target shapes (B*T, C) = (2048, 256) and (256, 768).
const Shape kShapes[] = {{1, 1},   {3, 7},    {5, 33},     {7, 16},
                         {70, 65}, {33, 768}, {2048, 256}, {256, 768}};

// Inputs are U[-1, 1) + 3: the offset exercises the mean subtraction.
std::vector<float> Input(int64_t n, uint32_t seed) { return RandomFloats(n, seed, 2.f, 4.f); }

// Tolerances. The normalised value n = (x − mean)·rstd has |n| <= ~2 here; computing x − mean
// in float costs ~6e-8·|x|/std ≈ 4e-7 absolute in n, and mean/rstd carry a few 1e-7 relative
// from float sums. Forward outputs (|w| <= 1, |b| <= 1) are therefore good to ~1e-6 absolute.
constexpr double kForwardAbsTol = 2e-6, kForwardRelTol = 2e-6;
// mean and rstd: sums of C floats in a few vector accumulators, ~1e-7 relative.
constexpr double kStatsRelTol = 1e-6;
// dinp = rstd·(g − mean g − n·mean gn) with rstd ≈ 1.7: a few 1e-7 relative in each term.
constexpr double kDinpAbsTol = 5e-6, kDinpRelTol = 5e-6;
// dweight/dbias sum N terms of magnitude <= 2 in float: the chunked order rounds each partial
// sum by at most 2^-24 of a value <= 2·N, so the error is at most ~1.2e-7·N·(depth), with the
// depth ~ 32 rows + N/32 chunks; 1e-6·N is generous and still catches any missed row (>= 1e-3).
double ParamGradAbsTol(int64_t N) { return 1e-6 * static_cast<double>(N) + 1e-6; }

class LayerNormTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

TEST_P(LayerNormTest, ForwardMatchesReference) {
  for (const Shape& s : kShapes) {
    const int64_t n = s.N * s.C;
    const auto x = Input(n, 1), w = RandomFloats(s.C, 2), b = RandomFloats(s.C, 3);
    std::vector<float> out(n + 1, -9.f), mean(s.N), rstd(s.N);
    LayerNormForward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), s.N, s.C);
    std::vector<double> want(n), want_mean(s.N), want_rstd(s.N);
    LayerNormForwardReference(want.data(), want_mean.data(), want_rstd.data(), ToDouble(x).data(),
                              ToDouble(w).data(), ToDouble(b).data(), s.N, s.C);
    EXPECT_TRUE(AllClose(out.data(), want.data(), n, kForwardAbsTol, kForwardRelTol)) << s.C;
    EXPECT_TRUE(AllClose(mean, want_mean, 0, kStatsRelTol)) << s.C;
    EXPECT_TRUE(AllClose(rstd, want_rstd, 0, kStatsRelTol)) << s.C;
    EXPECT_EQ(out[n], -9.f);
  }
}

// The bf16 output is the fp32 output rounded (kernels/cast's FloatToHalf), bit for bit, with the
// same statistics; nothing past the end is written.
TEST_P(LayerNormTest, Bf16OutputIsTheFp32OutputRounded) {
  for (const Shape& s : kShapes) {
    const int64_t n = s.N * s.C;
    const auto x = Input(n, 11), w = RandomFloats(s.C, 12), b = RandomFloats(s.C, 13);
    std::vector<float> out(n), mean(s.N), rstd(s.N), mean16(s.N), rstd16(s.N);
    LayerNormForward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), s.N, s.C);
    std::vector<uint16_t> want(n), got(n + 1, 0xabcd);
    FloatToHalf(DType::kBF16, want.data(), out.data(), n);
    LayerNormForward(got.data(), mean16.data(), rstd16.data(), x.data(), w.data(), b.data(), s.N,
                     s.C);
    EXPECT_EQ(std::vector<uint16_t>(got.begin(), got.begin() + n), want) << s.N << "x" << s.C;
    EXPECT_TRUE(BitwiseEqual(mean16, mean));
    EXPECT_TRUE(BitwiseEqual(rstd16, rstd));
    EXPECT_EQ(got[n], 0xabcd);
  }
}

TEST_P(LayerNormTest, ForwardWithoutStats) {
  const Shape s{9, 40};
  const auto x = Input(s.N * s.C, 4), w = RandomFloats(s.C, 5), b = RandomFloats(s.C, 6);
  std::vector<float> out(s.N * s.C), with_stats(s.N * s.C), mean(s.N), rstd(s.N);
  LayerNormForward(out.data(), nullptr, nullptr, x.data(), w.data(), b.data(), s.N, s.C);
  LayerNormForward(with_stats.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), s.N,
                   s.C);
  EXPECT_TRUE(BitwiseEqual(out, with_stats));
}

TEST_P(LayerNormTest, BackwardAccumulatesOverTwoMicroSteps) {
  for (const Shape& s : kShapes) {
    const int64_t n = s.N * s.C;
    const auto w = RandomFloats(s.C, 7), b = RandomFloats(s.C, 8);
    // Gradients start from non-zero values: everything must accumulate.
    auto dinp = RandomFloats(n, 9), dw = RandomFloats(s.C, 10), db = RandomFloats(s.C, 11);
    auto want_dinp = ToDouble(dinp), want_dw = ToDouble(dw), want_db = ToDouble(db);
    for (int step = 0; step < 2; ++step) {
      const auto x = Input(n, 12 + step), dout = RandomFloats(n, 14 + step);
      std::vector<float> out(n), mean(s.N), rstd(s.N);
      LayerNormForward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), s.N,
                       s.C);
      LayerNormBackward(dinp.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(),
                        mean.data(), rstd.data(), s.N, s.C);
      std::vector<double> ref_out(n), ref_mean(s.N), ref_rstd(s.N);
      const auto xd = ToDouble(x), wd = ToDouble(w);
      LayerNormForwardReference(ref_out.data(), ref_mean.data(), ref_rstd.data(), xd.data(),
                                wd.data(), ToDouble(b).data(), s.N, s.C);
      LayerNormBackwardReference(want_dinp.data(), want_dw.data(), want_db.data(),
                                 ToDouble(dout).data(), xd.data(), wd.data(), ref_mean.data(),
                                 ref_rstd.data(), s.N, s.C);
    }
    EXPECT_TRUE(AllClose(dinp, want_dinp, kDinpAbsTol, kDinpRelTol)) << s.N << "x" << s.C;
    EXPECT_TRUE(AllClose(dw, want_dw, ParamGradAbsTol(2 * s.N), 0)) << s.N << "x" << s.C;
    EXPECT_TRUE(AllClose(db, want_db, ParamGradAbsTol(2 * s.N), 0)) << s.N << "x" << s.C;
  }
}

// All outputs, dweight and dbias included, are bitwise identical for 1, 2 and 3 threads.
TEST_P(LayerNormTest, BitwiseIdenticalAcrossThreadCounts) {
  const Shape s{1000, 200};
  const int64_t n = s.N * s.C;
  const auto x = Input(n, 20), w = RandomFloats(s.C, 21), b = RandomFloats(s.C, 22);
  const auto dout = RandomFloats(n, 23);
  std::vector<float> first[5];
  for (int threads : {1, 2, 3}) {
    testing::ScopedThreads scoped(threads);
    std::vector<float> out(n), mean(s.N), rstd(s.N), dinp(n, 0.f), dw(s.C, 0.f), db(s.C, 0.f);
    LayerNormForward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), s.N, s.C);
    LayerNormBackward(dinp.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(),
                      mean.data(), rstd.data(), s.N, s.C);
    std::vector<float> got[5] = {out, rstd, dinp, dw, db};
    for (int k = 0; k < 5; ++k) {
      if (threads == 1) {
        first[k] = got[k];
      } else {
        EXPECT_TRUE(BitwiseEqual(got[k], first[k])) << "output " << k << " threads " << threads;
      }
    }
  }
}

TEST_P(LayerNormTest, ZeroRowsIsANoOp) {
  std::vector<float> w(8, 1.f), b(8, 0.f), dw(8, 3.f), db(8, 4.f);
  LayerNormForward(static_cast<float*>(nullptr), nullptr, nullptr, nullptr, w.data(), b.data(), 0,
                   8);
  LayerNormBackward(nullptr, dw.data(), db.data(), nullptr, nullptr, w.data(), nullptr, nullptr, 0,
                    8);
  EXPECT_EQ(dw, std::vector<float>(8, 3.f));
  EXPECT_EQ(db, std::vector<float>(8, 4.f));
}

INSTANTIATE_TEST_SUITE_P(AllIsas, LayerNormTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

// The float64 backward reference equals central differences of L = Σ out·dout through the
// float64 forward, for inp, weight and bias. With h = 1e-6 the difference quotient is good to
// ~1e-9 here (rounding ~1e-16/h, truncation h²·|L'''|).
TEST(LayerNormReferenceTest, BackwardMatchesFiniteDifferences) {
  const int64_t N = 3;
  const int C = 5;
  const auto x = ToDouble(RandomFloats(N * C, 30, -2.f, 2.f));
  const auto w = ToDouble(RandomFloats(C, 31)), b = ToDouble(RandomFloats(C, 32));
  const auto dout = ToDouble(RandomFloats(N * C, 33));
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& ww,
                  const std::vector<double>& bb) {
    std::vector<double> out(N * C), mean(N), rstd(N);
    LayerNormForwardReference(out.data(), mean.data(), rstd.data(), xx.data(), ww.data(), bb.data(),
                              N, C);
    double l = 0;
    for (int64_t i = 0; i < N * C; ++i) l += out[i] * dout[i];
    return l;
  };
  std::vector<double> out(N * C), mean(N), rstd(N);
  LayerNormForwardReference(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N,
                            C);
  std::vector<double> dx(N * C, 0.0), dw(C, 0.0), db(C, 0.0);
  LayerNormBackwardReference(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(),
                             mean.data(), rstd.data(), N, C);
  const auto fd_x = testing::FiniteDifferenceGradient(
      [&](const std::vector<double>& v) { return loss(v, w, b); }, x);
  const auto fd_w = testing::FiniteDifferenceGradient(
      [&](const std::vector<double>& v) { return loss(x, v, b); }, w);
  const auto fd_b = testing::FiniteDifferenceGradient(
      [&](const std::vector<double>& v) { return loss(x, w, v); }, b);
  for (int64_t i = 0; i < N * C; ++i) EXPECT_NEAR(dx[i], fd_x[i], 1e-8) << i;
  for (int c = 0; c < C; ++c) {
    EXPECT_NEAR(dw[c], fd_w[c], 1e-8) << c;
    EXPECT_NEAR(db[c], fd_b[c], 1e-8) << c;
  }
}

}  // namespace
}  // namespace dstrain::kernels
