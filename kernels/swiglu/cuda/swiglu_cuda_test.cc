// SwiGluForward / SwiGluBackward on the GPU (and the CPU simulator) vs the float64 reference.
#include "kernels/swiglu/cuda/swiglu_cuda.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "kernels/swiglu/swiglu_reference.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::AllClose;
using testing::DeviceBuffer;
using testing::RandomFloats;
using testing::ToDouble;

struct Shape {
  int64_t N;
  int I;
};

// I = 1, odd I, more elements than one grid-stride pass of 1024·256 threads (the last shape).
const Shape kShapes[] = {{1, 1}, {3, 7}, {5, 33}, {70, 65}, {40, 8000}};

// [gate | up]: gate U[-8, 8), up U[-2, 2), as in the CPU test.
std::vector<float> Input(const Shape& s, uint32_t seed) {
  const auto g = RandomFloats(s.N * s.I, seed, -8.f, 8.f), u = RandomFloats(s.N * s.I, seed + 1000);
  std::vector<float> inp(2 * s.N * s.I);
  for (int64_t r = 0; r < s.N; ++r) {
    for (int c = 0; c < s.I; ++c) {
      inp[r * 2 * s.I + c] = g[r * s.I + c];
      inp[r * 2 * s.I + s.I + c] = 2.f * u[r * s.I + c];
    }
  }
  return inp;
}

// As swiglu_test.cc: expf is within 2 ulp on the GPU (exact std::exp on the simulator), so the
// forward and d up are good to a few 1e-7 relative; d gate has the cancellation of 1 + g·e·s near
// g ≈ −2.4, covered by the absolute part.
constexpr double kForwardAbsTol = 1e-30, kForwardRelTol = 1e-6;
constexpr double kBackwardAbsTol = 1e-7, kBackwardRelTol = 1e-6;

TEST(SwiGluCudaTest, ForwardMatchesReference) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.N << "x" << s.I);
    const int64_t n = s.N * s.I;
    const auto inp = Input(s, 1);
    DeviceBuffer<float> d_inp(inp), out(std::vector<float>(n + 1, -9.f));
    ASSERT_TRUE(SwiGluForward(out.get(), d_inp.get(), s.N, s.I, nullptr).ok());
    std::vector<double> want(n);
    SwiGluForwardReference(want.data(), ToDouble(inp).data(), s.N, s.I);
    std::vector<float> got = out.ToHost();
    EXPECT_EQ(got[n], -9.f);
    got.pop_back();
    EXPECT_TRUE(AllClose(got, want, kForwardAbsTol, kForwardRelTol));
  }
}

TEST(SwiGluCudaTest, BackwardMatchesReferenceOverwritesAndMayAliasInput) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.N << "x" << s.I);
    const int64_t n = s.N * s.I;
    const auto inp = Input(s, 2), dout = RandomFloats(n, 3);
    DeviceBuffer<float> d_inp(inp), d_dout(dout), dinp(std::vector<float>(2 * n + 1, 55.f));
    ASSERT_TRUE(SwiGluBackward(dinp.get(), d_inp.get(), d_dout.get(), s.N, s.I, nullptr).ok());
    std::vector<double> want(2 * n);
    SwiGluBackwardReference(want.data(), ToDouble(inp).data(), ToDouble(dout).data(), s.N, s.I);
    std::vector<float> got = dinp.ToHost();
    EXPECT_EQ(got[2 * n], 55.f);
    got.pop_back();
    EXPECT_TRUE(AllClose(got, want, kBackwardAbsTol, kBackwardRelTol));
    // In place over the input: the same values.
    ASSERT_TRUE(SwiGluBackward(d_inp.get(), d_inp.get(), d_dout.get(), s.N, s.I, nullptr).ok());
    EXPECT_EQ(d_inp.ToHost(), got);
  }
}

TEST(SwiGluCudaTest, SaturatedGatesStayFinite) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceBuffer<float> inp(std::vector<float>{-1e4f, -100.f, 100.f, 1e4f, 3.f, 3.f, 3.f, 3.f});
  DeviceBuffer<float> dout(std::vector<float>{1.f, 1.f, 1.f, 1.f}), out(4), dinp(8);
  ASSERT_TRUE(SwiGluForward(out.get(), inp.get(), 1, 4, nullptr).ok());
  ASSERT_TRUE(SwiGluBackward(dinp.get(), inp.get(), dout.get(), 1, 4, nullptr).ok());
  const std::vector<float> y = out.ToHost(), g = dinp.ToHost();
  EXPECT_NEAR(y[0], 0.f, 1e-30);
  EXPECT_NEAR(y[1], 0.f, 1e-30);
  EXPECT_EQ(y[2], 300.f);
  EXPECT_EQ(y[3], 3e4f);
  for (int k : {0, 1, 4, 5}) EXPECT_NEAR(g[k], 0.f, 1e-30) << k;
  EXPECT_EQ(g[2], 3.f);
  EXPECT_EQ(g[3], 3.f);
  EXPECT_EQ(g[6], 100.f);
  EXPECT_EQ(g[7], 1e4f);
}

TEST(SwiGluCudaTest, EmptyAndInvalidShapes) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  EXPECT_TRUE(SwiGluForward(nullptr, nullptr, 0, 8, nullptr).ok());
  EXPECT_TRUE(SwiGluBackward(nullptr, nullptr, nullptr, 4, 0, nullptr).ok());
  EXPECT_EQ(SwiGluForward(nullptr, nullptr, -1, 8, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SwiGluBackward(nullptr, nullptr, nullptr, 2, 8, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
