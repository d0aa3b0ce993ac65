// CrossEntropyForwardBackward on the GPU (and the CPU simulator) vs the float64 reference.
#include "kernels/crossentropy/cuda/crossentropy_cuda.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/crossentropy/crossentropy_reference.h"
#include "kernels/cuda_common/test_util.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::AllClose;
using testing::DeviceBuffer;
using testing::RandomFloats;
using testing::RandomInts;
using testing::ToDouble;

struct Shape {
  int64_t N;
  int V, Vp;
};

// V = 1 (loss 0); V below, at and above a warp, with and without padding (the block size follows
// V up to 1024); V above 1024 threads (several columns per thread) and the GPT-2 vocabulary.
const Shape kShapes[] = {{1, 1, 1},       {3, 7, 16},      {5, 33, 40},       {4, 256, 256},
                         {3, 1500, 1536}, {2, 8192, 8192}, {2, 50257, 50304}, {1, 17, 17}};

// Logits in [40, 60): a missing max subtraction would overflow exp. Padded columns hold NaN: the
// kernel must never read them.
std::vector<float> Logits(const Shape& s, uint32_t seed) {
  auto z = RandomFloats(s.N * s.Vp, seed, 40.f, 60.f);
  for (int64_t n = 0; n < s.N; ++n) {
    for (int j = s.V; j < s.Vp; ++j) z[n * s.Vp + j] = std::numeric_limits<float>::quiet_NaN();
  }
  return z;
}

// As in the CPU test (crossentropy_test.cc): the loss adds floats of ~50 (ulp/2 ~ 4e-6); each
// probability carries expf's and the sum's ~1e-7 relative error.
constexpr double kLossAbsTol = 1e-5, kLossRelTol = 1e-6;
constexpr double kGradRelTol = 1e-6;
double GradAbsTol(float scale) { return 1e-7 * std::fabs(scale); }

TEST(CrossEntropyCudaTest, ForwardBackwardMatchesReferenceDeterministically) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const float scale = 1.f / 3.f;
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.N << "x" << s.V << "/" << s.Vp);
    const auto z = Logits(s, 1);
    const auto targets = RandomInts(s.N, 2, s.V);
    DeviceBuffer<float> d_z(z), losses(s.N);
    DeviceBuffer<int32_t> d_targets(targets);
    ASSERT_TRUE(CrossEntropyForwardBackward(losses.get(), d_z.get(), d_targets.get(), s.N, s.V,
                                            s.Vp, scale, nullptr)
                    .ok());
    const auto zd = ToDouble(z);
    std::vector<double> want_loss(s.N), want_grad(s.N * s.Vp);
    CrossEntropyForwardReference(want_loss.data(), zd.data(), targets.data(), s.N, s.V, s.Vp);
    CrossEntropyBackwardReference(want_grad.data(), zd.data(), targets.data(), s.N, s.V, s.Vp,
                                  scale);
    const std::vector<float> got_loss = losses.ToHost(), got_grad = d_z.ToHost();
    EXPECT_TRUE(AllClose(got_loss, want_loss, kLossAbsTol, kLossRelTol));
    EXPECT_TRUE(AllClose(got_grad, want_grad, GradAbsTol(scale), kGradRelTol));

    d_z.Upload(z);
    ASSERT_TRUE(CrossEntropyForwardBackward(losses.get(), d_z.get(), d_targets.get(), s.N, s.V,
                                            s.Vp, scale, nullptr)
                    .ok());
    EXPECT_EQ(losses.ToHost(), got_loss);
    EXPECT_EQ(d_z.ToHost(), got_grad);
  }
}

TEST(CrossEntropyCudaTest, ForwardOnlyLeavesLogitsUntouched) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(s.V);
    const auto z = Logits(s, 3);
    const auto targets = RandomInts(s.N, 4, s.V);
    DeviceBuffer<float> d_z(z), losses(s.N);
    DeviceBuffer<int32_t> d_targets(targets);
    ASSERT_TRUE(CrossEntropyForwardBackward(losses.get(), d_z.get(), d_targets.get(), s.N, s.V,
                                            s.Vp, 0.f, nullptr)
                    .ok());
    const std::vector<float> after = d_z.ToHost();
    ASSERT_EQ(after.size(), z.size());
    EXPECT_EQ(std::memcmp(after.data(), z.data(), z.size() * sizeof(float)), 0);  // NaNs too
    std::vector<double> want(s.N);
    CrossEntropyForwardReference(want.data(), ToDouble(z).data(), targets.data(), s.N, s.V, s.Vp);
    EXPECT_TRUE(AllClose(losses.ToHost(), want, kLossAbsTol, kLossRelTol));
  }
}

TEST(CrossEntropyCudaTest, NullLossesAndExtremeLogits) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  // One logit dominates by 1e4: the softmax saturates to exactly one-hot without NaN.
  const Shape s{2, 37, 48};
  std::vector<float> z(s.N * s.Vp, 0.f);
  z[5] = 1e4f;          // row 0: target 5 is certain
  z[s.Vp + 9] = -1e4f;  // row 1: target 9 is impossible
  const std::vector<int32_t> targets = {5, 9};
  DeviceBuffer<float> d_z(z), d_z2(z), losses(2);
  DeviceBuffer<int32_t> d_targets(targets);
  ASSERT_TRUE(CrossEntropyForwardBackward(losses.get(), d_z.get(), d_targets.get(), s.N, s.V, s.Vp,
                                          1.f, nullptr)
                  .ok());
  ASSERT_TRUE(CrossEntropyForwardBackward(nullptr, d_z2.get(), d_targets.get(), s.N, s.V, s.Vp, 1.f,
                                          nullptr)
                  .ok());
  const std::vector<float> g = d_z.ToHost(), l = losses.ToHost();
  EXPECT_EQ(g, d_z2.ToHost());
  EXPECT_NEAR(l[0], 0.f, 1e-6);
  EXPECT_NEAR(l[1], 1e4f + std::log(36.f), 1e-2);
  for (float v : g) ASSERT_TRUE(std::isfinite(v));
  EXPECT_NEAR(g[5], 0.f, 1e-6);
  EXPECT_NEAR(g[s.Vp + 9], -1.f, 1e-6);
}

TEST(CrossEntropyCudaTest, OutOfRangeTargetGivesNaNLossNotACrash) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const Shape s{3, 10, 12};
  const auto z = Logits(s, 5);
  const std::vector<int32_t> targets = {2, 10, -1};
  DeviceBuffer<float> d_z(z), losses(s.N);
  DeviceBuffer<int32_t> d_targets(targets);
  ASSERT_TRUE(CrossEntropyForwardBackward(losses.get(), d_z.get(), d_targets.get(), s.N, s.V, s.Vp,
                                          1.f, nullptr)
                  .ok());
  const std::vector<float> l = losses.ToHost();
  EXPECT_TRUE(std::isfinite(l[0]));
  EXPECT_TRUE(std::isnan(l[1]));
  EXPECT_TRUE(std::isnan(l[2]));
}

TEST(CrossEntropyCudaTest, EmptyAndInvalid) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  EXPECT_TRUE(CrossEntropyForwardBackward(nullptr, nullptr, nullptr, 0, 5, 8, 1.f, nullptr).ok());
  EXPECT_EQ(CrossEntropyForwardBackward(nullptr, nullptr, nullptr, 2, 9, 8, 1.f, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CrossEntropyForwardBackward(nullptr, nullptr, nullptr, 2, 0, 8, 1.f, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
