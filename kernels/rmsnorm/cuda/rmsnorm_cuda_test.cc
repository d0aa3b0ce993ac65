// RmsNormForward / RmsNormBackward on the GPU (and the CPU simulator) vs the float64 reference.
#include "kernels/rmsnorm/cuda/rmsnorm_cuda.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "kernels/rmsnorm/rmsnorm_reference.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::AllClose;
using testing::DeviceBuffer;
using testing::RandomFloats;
using testing::ToDouble;

struct Shape {
  int64_t N;
  int C;
};

// C below, at and above a warp (tails of the lane loop); N not a multiple of the 8 rows per
// block; C not a multiple of the 32-column tile of the dweight reduction; N above the 32 row
// lanes of that reduction; the GPT-2 width and a Llama width.
const Shape kShapes[] = {{1, 1},   {3, 7},    {5, 33},    {7, 16},
                         {70, 65}, {33, 768}, {100, 256}, {9, 4096}};

constexpr float kEps = 1e-5f;

// Inputs U[-2, 2). Tolerances as in the CPU test (rmsnorm_test.cc): the warp's 32 lanes each sum
// ≤ C/32 squares (≤ 128 here) before the shuffle tree, well inside the 2e-6 allowed for rstd.
std::vector<float> Input(int64_t n, uint32_t seed) { return RandomFloats(n, seed, -2.f, 2.f); }
constexpr double kStatsRelTol = 2e-6;
constexpr double kForwardAbsTol = 1e-6, kForwardRelTol = 3e-6;
constexpr double kDinpAbsTol = 3e-6, kDinpRelTol = 3e-6;
double ParamGradAbsTol(int64_t N) { return 1e-6 * static_cast<double>(N) + 1e-6; }

TEST(RmsNormCudaTest, ForwardMatchesReference) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.N << "x" << s.C);
    const int64_t n = s.N * s.C;
    const auto x = Input(n, 1), w = RandomFloats(s.C, 2);
    DeviceBuffer<float> d_x(x), d_w(w), out(std::vector<float>(n + 1, -9.f)), rstd(s.N);
    ASSERT_TRUE(
        RmsNormForward(out.get(), rstd.get(), d_x.get(), d_w.get(), s.N, s.C, kEps, nullptr).ok());
    std::vector<double> want(n), want_rstd(s.N);
    RmsNormForwardReference(want.data(), want_rstd.data(), ToDouble(x).data(), ToDouble(w).data(),
                            s.N, s.C, kEps);
    std::vector<float> got = out.ToHost();
    EXPECT_EQ(got[n], -9.f);
    got.pop_back();
    EXPECT_TRUE(AllClose(got, want, kForwardAbsTol, kForwardRelTol));
    EXPECT_TRUE(AllClose(rstd.ToHost(), want_rstd, 0, kStatsRelTol));
  }
}

TEST(RmsNormCudaTest, ForwardWithoutStatsAndInPlace) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const Shape s{9, 40};
  const auto x = Input(s.N * s.C, 4), w = RandomFloats(s.C, 5);
  DeviceBuffer<float> d_x(x), d_w(w), out(s.N * s.C), with_stats(s.N * s.C), rstd(s.N), in_place(x);
  ASSERT_TRUE(
      RmsNormForward(out.get(), nullptr, d_x.get(), d_w.get(), s.N, s.C, kEps, nullptr).ok());
  ASSERT_TRUE(
      RmsNormForward(with_stats.get(), rstd.get(), d_x.get(), d_w.get(), s.N, s.C, kEps, nullptr)
          .ok());
  ASSERT_TRUE(
      RmsNormForward(in_place.get(), nullptr, in_place.get(), d_w.get(), s.N, s.C, kEps, nullptr)
          .ok());
  EXPECT_EQ(out.ToHost(), with_stats.ToHost());
  EXPECT_EQ(out.ToHost(), in_place.ToHost());
}

TEST(RmsNormCudaTest, BackwardAccumulatesOverTwoMicroStepsDeterministically) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.N << "x" << s.C);
    const int64_t n = s.N * s.C;
    const auto w = RandomFloats(s.C, 7);
    // Gradients start from non-zero values: everything must accumulate.
    const auto dinp0 = RandomFloats(n, 9), dw0 = RandomFloats(s.C, 10);
    auto want_dinp = ToDouble(dinp0), want_dw = ToDouble(dw0);
    DeviceBuffer<float> d_w(w), dinp(dinp0), dw(dw0);
    std::vector<float> first[2];
    for (int replay = 0; replay < 2; ++replay) {
      if (replay == 1) {
        dinp.Upload(dinp0);
        dw.Upload(dw0);
      }
      for (int step = 0; step < 2; ++step) {
        const auto x = Input(n, 12 + step), dout = RandomFloats(n, 14 + step);
        DeviceBuffer<float> d_x(x), d_dout(dout), out(n), rstd(s.N);
        ASSERT_TRUE(
            RmsNormForward(out.get(), rstd.get(), d_x.get(), d_w.get(), s.N, s.C, kEps, nullptr)
                .ok());
        ASSERT_TRUE(RmsNormBackward(dinp.get(), dw.get(), d_dout.get(), d_x.get(), d_w.get(),
                                    rstd.get(), s.N, s.C, nullptr)
                        .ok());
        if (replay == 1) continue;
        std::vector<double> ref_out(n), ref_rstd(s.N);
        const auto xd = ToDouble(x), wd = ToDouble(w);
        RmsNormForwardReference(ref_out.data(), ref_rstd.data(), xd.data(), wd.data(), s.N, s.C,
                                kEps);
        RmsNormBackwardReference(want_dinp.data(), want_dw.data(), ToDouble(dout).data(), xd.data(),
                                 wd.data(), ref_rstd.data(), s.N, s.C);
      }
      const std::vector<float> got[2] = {dinp.ToHost(), dw.ToHost()};
      if (replay == 0) {
        EXPECT_TRUE(AllClose(got[0], want_dinp, kDinpAbsTol, kDinpRelTol));
        EXPECT_TRUE(AllClose(got[1], want_dw, ParamGradAbsTol(2 * s.N), 0));
        for (int k = 0; k < 2; ++k) first[k] = got[k];
      } else {
        for (int k = 0; k < 2; ++k) EXPECT_EQ(got[k], first[k]) << "replay differs, output " << k;
      }
    }
  }
}

TEST(RmsNormCudaTest, EmptyAndInvalidShapes) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  EXPECT_TRUE(RmsNormForward(nullptr, nullptr, nullptr, nullptr, 0, 8, kEps, nullptr).ok());
  EXPECT_EQ(RmsNormForward(nullptr, nullptr, nullptr, nullptr, 4, 0, kEps, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RmsNormForward(nullptr, nullptr, nullptr, nullptr, 4, 8, -1.f, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      RmsNormBackward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, -1, 8, nullptr).code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      RmsNormBackward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 2, 8, nullptr).code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
