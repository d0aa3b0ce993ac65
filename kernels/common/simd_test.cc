#include "kernels/common/simd.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"

namespace dstrain::kernels {
namespace {

#define DT_ISA_BODY "kernels/common/simd_test_body.inc"
#include "kernels/common/foreach_isa.inc"

struct Fns {
  void (*exp)(float*, const float*, int64_t);
  void (*sigmoid)(float*, const float*, int64_t);
  void (*copy_partial)(float*, const float*, int);
  float (*sum_and_max)(const float*, int, float*);
  double (*sum_squares)(const float*, int64_t);
  void (*transpose)(const float*, float*);
  int (*lanes)();
};

Fns Select(Isa isa) {
  ScopedMaxIsa cap(isa);
  return {DT_ISA_SELECT(ExpArray),  DT_ISA_SELECT(SigmoidArray), DT_ISA_SELECT(CopyPartial),
          DT_ISA_SELECT(SumAndMax), DT_ISA_SELECT(SumSquares),   DT_ISA_SELECT(TransposeStrided),
          DT_ISA_SELECT(Lanes)};
}

class SimdTest : public ::testing::TestWithParam<Isa> {};

TEST_P(SimdTest, SelectsTheRequestedWidth) {
  const int lanes = Select(GetParam()).lanes();
  EXPECT_EQ(lanes, GetParam() == Isa::kAvx512 ? 16 : GetParam() == Isa::kAvx2 ? 8 : 1);
}

// The documented accuracy of Exp: within 2.5e-7 relative (about 2 ulp) of float64 exp over the
// whole unclamped range, checked on a dense grid of 2M points.
TEST_P(SimdTest, ExpIsAccurateOverItsRange) {
  const Fns f = Select(GetParam());
  const int64_t n = 1 << 21;
  std::vector<float> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) x[i] = -87.3f + (88.f + 87.3f) * (i + 0.5f) / n;
  f.exp(y.data(), x.data(), n);
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double want = std::exp(static_cast<double>(x[i]));
    worst = std::max(worst, std::fabs(y[i] - want) / want);
  }
  std::ostringstream text;
  text << worst;
  RecordProperty("max_relative_error", text.str());
  EXPECT_LT(worst, 2.5e-7) << IsaName(GetParam());
}

TEST_P(SimdTest, ExpClampsInsteadOfOverflowing) {
  const Fns f = Select(GetParam());
  std::vector<float> x = {-std::numeric_limits<float>::infinity(), -1000.f, 0.f, 1000.f,
                          std::numeric_limits<float>::infinity()};
  std::vector<float> y(x.size());
  f.exp(y.data(), x.data(), static_cast<int64_t>(x.size()));
  EXPECT_GT(y[0], 0.f);
  EXPECT_LT(y[0], 1.2e-38f);
  EXPECT_LT(y[1], 1.2e-38f);
  EXPECT_FLOAT_EQ(y[2], 1.f);
  EXPECT_TRUE(std::isfinite(y[3]));
  EXPECT_GT(y[3], 1e38f);
  EXPECT_TRUE(std::isfinite(y[4]));
}

TEST_P(SimdTest, SigmoidIsAccurateAndSaturates) {
  const Fns f = Select(GetParam());
  const int64_t n = 100003;
  std::vector<float> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) x[i] = -120.f + 240.f * i / (n - 1);
  f.sigmoid(y.data(), x.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const double want = 1.0 / (1.0 + std::exp(-static_cast<double>(x[i])));
    // Exp's 2.5e-7 relative error plus one rounded add and divide.
    ASSERT_NEAR(y[i], want, 1e-37 + 4e-7 * want) << "x=" << x[i];
  }
}

TEST_P(SimdTest, PartialLoadsAndStoresTouchOnlyTheirLanes) {
  const Fns f = Select(GetParam());
  const int lanes = f.lanes();
  for (int n = 0; n < lanes; ++n) {
    std::vector<float> in(lanes), out(lanes + 1, -7.f);
    for (int i = 0; i < lanes; ++i) in[i] = i + 1.f;
    f.copy_partial(out.data(), in.data(), n);
    for (int i = 0; i < n; ++i) EXPECT_EQ(out[i], in[i]);
    for (int i = n; i <= lanes; ++i) EXPECT_EQ(out[i], -7.f) << "n=" << n << " lane " << i;
  }
}

TEST_P(SimdTest, Reductions) {
  const Fns f = Select(GetParam());
  const int lanes = f.lanes();
  std::vector<float> in(lanes);
  for (int i = 0; i < lanes; ++i) in[i] = (i * 7 % 5) - 2.5f + 0.25f * i;
  float max = 0;
  const float sum = f.sum_and_max(in.data(), lanes, &max);
  double want_sum = 0, want_max = -1e30;
  for (float v : in) {
    want_sum += v;
    want_max = std::max<double>(want_max, v);
  }
  EXPECT_NEAR(sum, want_sum, 1e-5);
  EXPECT_EQ(max, want_max);
}

TEST_P(SimdTest, SumSquaresAccumulatesInDouble) {
  const Fns f = Select(GetParam());
  for (int64_t n : {0, 1, 7, 33, 1000, 100001}) {
    const auto x = testing::RandomFloats(n, 11, -3.f, 3.f);
    double want = 0;
    for (float v : x) want += static_cast<double>(v) * v;
    // Squares are exact in double and n <= 1e5 additions lose at most ~n * 2^-53 relative.
    EXPECT_NEAR(f.sum_squares(x.data(), n), want, 1e-12 * (want + 1)) << n;
  }
}

TEST_P(SimdTest, TransposeBlock) {
  const Fns f = Select(GetParam());
  const int lanes = f.lanes();
  std::vector<float> src(19 * 16), dst(23 * 16, -1.f);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i);
  f.transpose(src.data(), dst.data());
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 23; ++c) {
      const bool inside = r < lanes && c < lanes;
      EXPECT_EQ(dst[r * 23 + c], inside ? src[c * 19 + r] : -1.f) << r << "," << c;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, SimdTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

TEST(CpuFeaturesTest, CapsAndNames) {
  EXPECT_LE(static_cast<int>(ActiveIsa()), static_cast<int>(BestIsa()));
  {
    ScopedMaxIsa cap(Isa::kScalar);
    EXPECT_EQ(ActiveIsa(), Isa::kScalar);
  }
  EXPECT_EQ(AvailableIsas().back(), BestIsa());
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    Isa parsed;
    ASSERT_TRUE(ParseIsa(IsaName(isa), &parsed));
    EXPECT_EQ(parsed, isa);
  }
  Isa unused;
  EXPECT_FALSE(ParseIsa("sse9", &unused));
  const CpuFeatures& f = GetCpuFeatures();
  if (BestIsa() == Isa::kAvx512) {
    EXPECT_TRUE(f.avx512f && f.avx512bw && f.fma);
  }
}

}  // namespace
}  // namespace dstrain::kernels
