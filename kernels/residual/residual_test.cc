#include "kernels/residual/residual.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"
#include "kernels/residual/residual_reference.h"

namespace dstrain::kernels {
namespace {

using testing::AllClose;
using testing::RandomFloats;
using testing::ToDouble;

// Sizes around the vector widths, and one large enough to take the multi-threaded path.
const int64_t kSizes[] = {0, 1, 7, 16, 33, 1000, (int64_t{1} << 17) + 3};

// A float add, multiply or store is correctly rounded: within half an ulp (2^-24 relative) of
// the float64 result. No absolute slack is needed.
constexpr double kRoundingRelTol = 6e-8;

constexpr float kSentinel = -12345.f;

class ResidualTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

TEST_P(ResidualTest, ForwardMatchesReferenceAndStaysInBounds) {
  for (int64_t n : kSizes) {
    const auto a = RandomFloats(n, 1), b = RandomFloats(n, 2);
    std::vector<float> out(n + 17, kSentinel);
    ResidualForward(out.data(), a.data(), b.data(), n);
    std::vector<double> want(n);
    ResidualForwardReference(want.data(), ToDouble(a).data(), ToDouble(b).data(), n);
    EXPECT_TRUE(AllClose(out.data(), want.data(), n, 0, kRoundingRelTol)) << n;
    for (int64_t i = n; i < n + 17; ++i) ASSERT_EQ(out[i], kSentinel) << "wrote past n=" << n;
  }
}

TEST_P(ResidualTest, ForwardMayWriteOverAnInput) {
  const int64_t n = 1003;
  auto a = RandomFloats(n, 3);
  const auto b = RandomFloats(n, 4);
  std::vector<double> want(n);
  ResidualForwardReference(want.data(), ToDouble(a).data(), ToDouble(b).data(), n);
  ResidualForward(a.data(), a.data(), b.data(), n);
  EXPECT_TRUE(AllClose(a.data(), want.data(), n, 0, kRoundingRelTol));
}

TEST_P(ResidualTest, AddInPlaceAccumulatesOverTwoCalls) {
  for (int64_t n : kSizes) {
    auto y = RandomFloats(n, 5);
    const auto x1 = RandomFloats(n, 6), x2 = RandomFloats(n, 7);
    std::vector<double> want = ToDouble(y);
    AddInPlace(y.data(), x1.data(), n);
    AddInPlace(y.data(), x2.data(), n);
    // Two float adds round twice; reproduce the first rounding in the reference so each step is
    // within half an ulp.
    for (int64_t i = 0; i < n; ++i) {
      want[i] = static_cast<float>(want[i] + x1[i]);
      want[i] += x2[i];
    }
    EXPECT_TRUE(AllClose(y.data(), want.data(), n, 0, kRoundingRelTol)) << n;
  }
}

TEST_P(ResidualTest, ScaleAndFill) {
  for (int64_t n : kSizes) {
    auto x = RandomFloats(n, 8);
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; ++i) want[i] = x[i] * static_cast<double>(0.37f);
    std::vector<float> guarded(x);
    guarded.resize(n + 5, kSentinel);
    Scale(guarded.data(), n, 0.37f);
    EXPECT_TRUE(AllClose(guarded.data(), want.data(), n, 0, kRoundingRelTol)) << n;
    Fill(guarded.data(), n, 2.5f);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(guarded[i], 2.5f);
    for (int64_t i = n; i < n + 5; ++i) ASSERT_EQ(guarded[i], kSentinel);
  }
}

TEST_P(ResidualTest, SumSquaresMatchesReference) {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{31}, int64_t{16384}, int64_t{16385},
                    (int64_t{1} << 20) + 9}) {
    const auto x = RandomFloats(n, 9, -4.f, 4.f);
    const double want = SumSquaresReference(ToDouble(x).data(), n);
    // Squares of floats are exact in double; n additions of positive terms in double lose at
    // most n * 2^-53 relative, about 1e-10 for n = 1e6.
    EXPECT_NEAR(SumSquares(x.data(), n), want, 1e-10 * want) << n;
  }
}

TEST_P(ResidualTest, SumSquaresIsIndependentOfThreadCount) {
  const int64_t n = (int64_t{1} << 21) + 77;
  const auto x = RandomFloats(n, 10);
  double one, two;
  {
    testing::ScopedThreads threads(1);
    one = SumSquares(x.data(), n);
  }
  {
    testing::ScopedThreads threads(2);
    two = SumSquares(x.data(), n);
  }
  EXPECT_EQ(std::memcmp(&one, &two, sizeof(double)), 0) << one << " vs " << two;
}

INSTANTIATE_TEST_SUITE_P(AllIsas, ResidualTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

}  // namespace
}  // namespace dstrain::kernels
