// GeluForward / GeluBackward on the GPU (and the CPU simulator) vs the float64 reference.
#include "kernels/gelu/cuda/gelu_cuda.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "kernels/gelu/gelu_reference.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::AllClose;
using testing::DeviceBuffer;
using testing::RandomFloats;
using testing::ToDouble;

// CUDA's expf is within 2 ulp and the division is correctly rounded: about the CPU kernel's
// accuracy (gelu_test.cc), with a little room.
constexpr double kForwardAbsTol = 2e-7, kForwardRelTol = 2e-6;
constexpr double kBackwardAbsTol = 2e-7, kBackwardRelTol = 2e-6;

// Below a warp, odd, one full grid of 1024 x 256 threads plus a tail (the grid-stride loop's
// second round).
const int64_t kSizes[] = {1, 7, 33, 1000, 1024 * 256 + 5};

TEST(GeluCudaTest, ForwardMatchesReference) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    const auto x = RandomFloats(n, 1, -6.f, 6.f);
    DeviceBuffer<float> d_x(x), out(std::vector<float>(n + 1, -7.f));
    ASSERT_TRUE(GeluForward(out.get(), d_x.get(), n, nullptr).ok());
    std::vector<double> want(n);
    GeluForwardReference(want.data(), ToDouble(x).data(), n);
    std::vector<float> got = out.ToHost();
    EXPECT_EQ(got[n], -7.f);
    got.pop_back();
    EXPECT_TRUE(AllClose(got, want, kForwardAbsTol, kForwardRelTol));
  }
}

TEST(GeluCudaTest, BackwardMatchesReferenceAndOverwrites) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    const auto x = RandomFloats(n, 2, -6.f, 6.f), dy = RandomFloats(n, 3);
    DeviceBuffer<float> d_x(x), d_dy(dy), dx(std::vector<float>(n + 1, 99.f));
    ASSERT_TRUE(GeluBackward(dx.get(), d_x.get(), d_dy.get(), n, nullptr).ok());
    std::vector<double> want(n);
    GeluBackwardReference(want.data(), ToDouble(x).data(), ToDouble(dy).data(), n);
    std::vector<float> got = dx.ToHost();
    EXPECT_EQ(got[n], 99.f);
    got.pop_back();
    EXPECT_TRUE(AllClose(got, want, kBackwardAbsTol, kBackwardRelTol));
  }
}

// The whole range the sigmoid form has to handle, including |x| where exp would overflow, and
// the backward pass in place (dinp aliasing dout).
TEST(GeluCudaTest, WideRangeAndInPlace) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t n = 4001;
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = -60.f + 120.f * i / (n - 1);
  const auto dy = RandomFloats(n, 4);
  DeviceBuffer<float> d_x(x), y(n), g(dy);
  ASSERT_TRUE(GeluForward(y.get(), d_x.get(), n, nullptr).ok());
  ASSERT_TRUE(GeluBackward(g.get(), d_x.get(), g.get(), n, nullptr).ok());
  std::vector<double> want_y(n), want_g(n);
  GeluForwardReference(want_y.data(), ToDouble(x).data(), n);
  GeluBackwardReference(want_g.data(), ToDouble(x).data(), ToDouble(dy).data(), n);
  EXPECT_TRUE(AllClose(y.ToHost(), want_y, kForwardAbsTol, kForwardRelTol));
  EXPECT_TRUE(AllClose(g.ToHost(), want_g, kBackwardAbsTol, kBackwardRelTol));
}

TEST(GeluCudaTest, EmptyAndInvalid) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  EXPECT_TRUE(GeluForward(nullptr, nullptr, 0, nullptr).ok());
  EXPECT_EQ(GeluForward(nullptr, nullptr, -1, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GeluBackward(nullptr, nullptr, nullptr, 3, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
