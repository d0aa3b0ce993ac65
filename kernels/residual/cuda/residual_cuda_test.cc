// The residual-family kernels on the GPU (and the CPU simulator) vs float64 references.
#include "kernels/residual/cuda/residual_cuda.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "kernels/residual/residual_reference.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::AllClose;
using testing::DeviceBuffer;
using testing::RandomFloats;
using testing::ToDouble;

// Below a warp, odd, and one full grid (1024 blocks x 256 threads) plus a tail, which takes the
// grid-stride loop round twice.
const int64_t kSizes[] = {1, 7, 33, 1000, 1024 * 256 + 3};

// One correctly rounded fp32 operation: half an ulp.
constexpr double kRoundingRelTol = 6e-8;
constexpr float kSentinel = -12345.f;

std::vector<float> Guarded(const std::vector<float>& v, int extra = 17) {
  std::vector<float> g(v);
  g.resize(v.size() + extra, kSentinel);
  return g;
}

// The first n elements; the rest must still be sentinels.
std::vector<float> Unguard(std::vector<float> g, int64_t n) {
  for (size_t i = n; i < g.size(); ++i) EXPECT_EQ(g[i], kSentinel) << "wrote past n=" << n;
  g.resize(n);
  return g;
}

TEST(ResidualCudaTest, ForwardMatchesReferenceAndStaysInBounds) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    const auto a = RandomFloats(n, 1), b = RandomFloats(n, 2);
    DeviceBuffer<float> d_a(a), d_b(b), out(Guarded(std::vector<float>(n, 0.f)));
    ASSERT_TRUE(ResidualForward(out.get(), d_a.get(), d_b.get(), n, nullptr).ok());
    std::vector<double> want(n);
    ResidualForwardReference(want.data(), ToDouble(a).data(), ToDouble(b).data(), n);
    EXPECT_TRUE(AllClose(Unguard(out.ToHost(), n), want, 0, kRoundingRelTol));
  }
}

TEST(ResidualCudaTest, ForwardMayWriteOverAnInput) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t n = 1003;
  const auto a = RandomFloats(n, 3), b = RandomFloats(n, 4);
  std::vector<double> want(n);
  ResidualForwardReference(want.data(), ToDouble(a).data(), ToDouble(b).data(), n);
  DeviceBuffer<float> d_a(a), d_b(b);
  ASSERT_TRUE(ResidualForward(d_a.get(), d_a.get(), d_b.get(), n, nullptr).ok());
  EXPECT_TRUE(AllClose(d_a.ToHost(), want, 0, kRoundingRelTol));
}

TEST(ResidualCudaTest, AddInPlaceAccumulatesOverTwoCalls) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    const auto y = RandomFloats(n, 5), x1 = RandomFloats(n, 6), x2 = RandomFloats(n, 7);
    DeviceBuffer<float> d_y(Guarded(y)), d_x1(x1), d_x2(x2);
    ASSERT_TRUE(AddInPlace(d_y.get(), d_x1.get(), n, nullptr).ok());
    ASSERT_TRUE(AddInPlace(d_y.get(), d_x2.get(), n, nullptr).ok());
    // Reproduce the first rounding so each step is within half an ulp.
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; ++i) want[i] = static_cast<double>(y[i] + x1[i]) + x2[i];
    EXPECT_TRUE(AllClose(Unguard(d_y.ToHost(), n), want, 0, kRoundingRelTol));
  }
}

TEST(ResidualCudaTest, ScaleAndFill) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    const auto x = RandomFloats(n, 8);
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; ++i) want[i] = x[i] * static_cast<double>(0.37f);
    DeviceBuffer<float> d_x(Guarded(x, 5));
    ASSERT_TRUE(Scale(d_x.get(), n, 0.37f, nullptr).ok());
    EXPECT_TRUE(AllClose(Unguard(d_x.ToHost(), n), want, 0, kRoundingRelTol));
    ASSERT_TRUE(Fill(d_x.get(), n, 2.5f, nullptr).ok());
    for (float v : Unguard(d_x.ToHost(), n)) ASSERT_EQ(v, 2.5f);
  }
}

TEST(ResidualCudaTest, AddSumSquaresAccumulatesAndIsReproducible) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  // Up to more elements than one grid round, so that all 1024 partials are used.
  for (int64_t n : {int64_t{1}, int64_t{31}, int64_t{16385}, int64_t{1024 * 256 + 9}}) {
    SCOPED_TRACE(n);
    const auto x = RandomFloats(n, 9, -4.f, 4.f);
    const double want = SumSquaresReference(ToDouble(x).data(), n);
    DeviceBuffer<float> d_x(x);
    DeviceBuffer<double> total(std::vector<double>{0.5});
    ASSERT_TRUE(AddSumSquares(total.get(), d_x.get(), n, nullptr).ok());
    const double once = total.ToHost()[0];
    // Squares of floats are exact in double; the sum loses at most ~n·2^-53 relative.
    EXPECT_NEAR(once, 0.5 + want, 1e-12 * (0.5 + want));
    ASSERT_TRUE(AddSumSquares(total.get(), d_x.get(), n, nullptr).ok());
    EXPECT_NEAR(total.ToHost()[0], 0.5 + 2 * want, 1e-12 * (0.5 + 2 * want));
    // Bitwise the same on a replay.
    total.Upload({0.5});
    ASSERT_TRUE(AddSumSquares(total.get(), d_x.get(), n, nullptr).ok());
    const double again = total.ToHost()[0];
    EXPECT_EQ(std::memcmp(&once, &again, sizeof(double)), 0) << once << " vs " << again;
  }
}

TEST(ResidualCudaTest, EmptyAndInvalid) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  EXPECT_TRUE(ResidualForward(nullptr, nullptr, nullptr, 0, nullptr).ok());
  EXPECT_TRUE(AddSumSquares(nullptr, nullptr, 0, nullptr).ok());
  EXPECT_EQ(Scale(nullptr, -1, 1.f, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AddInPlace(nullptr, nullptr, 5, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
