// LayerNormForward / LayerNormBackward on the GPU (and the CPU simulator) vs the float64 reference.
#include "kernels/layernorm/cuda/layernorm_cuda.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "kernels/layernorm/layernorm_reference.h"

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
// block; C not a multiple of the 32-column tile of the dweight/dbias reduction; N above the 32
// row lanes of that reduction; the GPT-2 width.
const Shape kShapes[] = {{1, 1}, {3, 7}, {5, 33}, {7, 16}, {70, 65}, {33, 768}, {100, 256}};

// Inputs are U[2, 4): the offset exercises the mean subtraction. Tolerances as in the CPU test
// (layernorm_test.cc): ~1e-6 for forward outputs and statistics, a few 1e-6 for dinp, and 1e-6·N
// for the row sums of dweight/dbias (a missed row would cost >= 1e-3).
std::vector<float> Input(int64_t n, uint32_t seed) { return RandomFloats(n, seed, 2.f, 4.f); }
constexpr double kForwardAbsTol = 2e-6, kForwardRelTol = 2e-6;
constexpr double kStatsRelTol = 1e-6;
constexpr double kDinpAbsTol = 5e-6, kDinpRelTol = 5e-6;
double ParamGradAbsTol(int64_t N) { return 1e-6 * static_cast<double>(N) + 1e-6; }

TEST(LayerNormCudaTest, ForwardMatchesReference) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.N << "x" << s.C);
    const int64_t n = s.N * s.C;
    const auto x = Input(n, 1), w = RandomFloats(s.C, 2), b = RandomFloats(s.C, 3);
    DeviceBuffer<float> d_x(x), d_w(w), d_b(b), out(std::vector<float>(n + 1, -9.f)), mean(s.N),
        rstd(s.N);
    ASSERT_TRUE(LayerNormForward(out.get(), mean.get(), rstd.get(), d_x.get(), d_w.get(), d_b.get(),
                                 s.N, s.C, nullptr)
                    .ok());
    std::vector<double> want(n), want_mean(s.N), want_rstd(s.N);
    LayerNormForwardReference(want.data(), want_mean.data(), want_rstd.data(), ToDouble(x).data(),
                              ToDouble(w).data(), ToDouble(b).data(), s.N, s.C);
    std::vector<float> got = out.ToHost();
    EXPECT_EQ(got[n], -9.f);
    got.pop_back();
    EXPECT_TRUE(AllClose(got, want, kForwardAbsTol, kForwardRelTol));
    EXPECT_TRUE(AllClose(mean.ToHost(), want_mean, 0, kStatsRelTol));
    EXPECT_TRUE(AllClose(rstd.ToHost(), want_rstd, 0, kStatsRelTol));
  }
}

TEST(LayerNormCudaTest, ForwardWithoutStats) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const Shape s{9, 40};
  const auto x = Input(s.N * s.C, 4), w = RandomFloats(s.C, 5), b = RandomFloats(s.C, 6);
  DeviceBuffer<float> d_x(x), d_w(w), d_b(b), out(s.N * s.C), with_stats(s.N * s.C), mean(s.N),
      rstd(s.N);
  ASSERT_TRUE(LayerNormForward(out.get(), nullptr, nullptr, d_x.get(), d_w.get(), d_b.get(), s.N,
                               s.C, nullptr)
                  .ok());
  ASSERT_TRUE(LayerNormForward(with_stats.get(), mean.get(), rstd.get(), d_x.get(), d_w.get(),
                               d_b.get(), s.N, s.C, nullptr)
                  .ok());
  EXPECT_EQ(out.ToHost(), with_stats.ToHost());
}

TEST(LayerNormCudaTest, BackwardAccumulatesOverTwoMicroStepsDeterministically) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.N << "x" << s.C);
    const int64_t n = s.N * s.C;
    const auto w = RandomFloats(s.C, 7), b = RandomFloats(s.C, 8);
    // Gradients start from non-zero values: everything must accumulate.
    const auto dinp0 = RandomFloats(n, 9), dw0 = RandomFloats(s.C, 10), db0 = RandomFloats(s.C, 11);
    auto want_dinp = ToDouble(dinp0), want_dw = ToDouble(dw0), want_db = ToDouble(db0);
    DeviceBuffer<float> d_w(w), d_b(b), dinp(dinp0), dw(dw0), db(db0);
    std::vector<float> first[3];
    for (int replay = 0; replay < 2; ++replay) {
      if (replay == 1) {
        dinp.Upload(dinp0);
        dw.Upload(dw0);
        db.Upload(db0);
      }
      for (int step = 0; step < 2; ++step) {
        const auto x = Input(n, 12 + step), dout = RandomFloats(n, 14 + step);
        DeviceBuffer<float> d_x(x), d_dout(dout), out(n), mean(s.N), rstd(s.N);
        ASSERT_TRUE(LayerNormForward(out.get(), mean.get(), rstd.get(), d_x.get(), d_w.get(),
                                     d_b.get(), s.N, s.C, nullptr)
                        .ok());
        ASSERT_TRUE(LayerNormBackward(dinp.get(), dw.get(), db.get(), d_dout.get(), d_x.get(),
                                      d_w.get(), mean.get(), rstd.get(), s.N, s.C, nullptr)
                        .ok());
        if (replay == 1) continue;
        std::vector<double> ref_out(n), ref_mean(s.N), ref_rstd(s.N);
        const auto xd = ToDouble(x), wd = ToDouble(w);
        LayerNormForwardReference(ref_out.data(), ref_mean.data(), ref_rstd.data(), xd.data(),
                                  wd.data(), ToDouble(b).data(), s.N, s.C);
        LayerNormBackwardReference(want_dinp.data(), want_dw.data(), want_db.data(),
                                   ToDouble(dout).data(), xd.data(), wd.data(), ref_mean.data(),
                                   ref_rstd.data(), s.N, s.C);
      }
      const std::vector<float> got[3] = {dinp.ToHost(), dw.ToHost(), db.ToHost()};
      if (replay == 0) {
        EXPECT_TRUE(AllClose(got[0], want_dinp, kDinpAbsTol, kDinpRelTol));
        EXPECT_TRUE(AllClose(got[1], want_dw, ParamGradAbsTol(2 * s.N), 0));
        EXPECT_TRUE(AllClose(got[2], want_db, ParamGradAbsTol(2 * s.N), 0));
        for (int k = 0; k < 3; ++k) first[k] = got[k];
      } else {
        for (int k = 0; k < 3; ++k) EXPECT_EQ(got[k], first[k]) << "replay differs, output " << k;
      }
    }
  }
}

TEST(LayerNormCudaTest, EmptyAndInvalidShapes) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  EXPECT_TRUE(
      LayerNormForward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 8, nullptr).ok());
  EXPECT_EQ(
      LayerNormForward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 0, nullptr).code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LayerNormBackward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                              nullptr, -1, 8, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
