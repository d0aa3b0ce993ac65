// The fused unscale + non-finite check on the GPU (and the CPU simulator).
#include "kernels/precision/cuda/precision_cuda.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::DeviceBuffer;
using testing::RandomFloats;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Below a warp, odd, and more than one grid round (1024 x 256 threads).
const int64_t kSizes[] = {1, 37, 1024 * 256 + 11};

TEST(PrecisionCudaTest, UnscalesFloatAndFlagsOnlyNonFinite) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const float inv_scale = 1.0f / 1024.0f;
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    const auto g = RandomFloats(n, 1, -3000.f, 3000.f);
    DeviceBuffer<float> d_g(g);
    DeviceBuffer<int> flag(1);
    ASSERT_TRUE(UnscaleAndCheckFinite(d_g.get(), n, inv_scale, flag.get(), nullptr).ok());
    const std::vector<float> got = d_g.ToHost();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], g[i] * inv_scale) << i;  // exact: 2^-10
    EXPECT_EQ(flag.ToHost()[0], 0);

    // One bad value anywhere, here the last element (the grid-stride loop's last round), sets
    // the flag; the other values are still unscaled.
    for (float bad : {kInf, -kInf, kNaN}) {
      std::vector<float> with_bad = g;
      with_bad[n - 1] = bad;
      d_g.Upload(with_bad);
      flag.Upload({0});
      ASSERT_TRUE(UnscaleAndCheckFinite(d_g.get(), n, inv_scale, flag.get(), nullptr).ok());
      EXPECT_EQ(flag.ToHost()[0], 1) << bad;
      if (n > 1) {
        EXPECT_EQ(d_g.ToHost()[0], g[0] * inv_scale);
      }
    }
  }
}

TEST(PrecisionCudaTest, FlagIsNeverCleared) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceBuffer<float> clean(RandomFloats(100, 2));
  DeviceBuffer<int> flag(std::vector<int>{1});
  ASSERT_TRUE(UnscaleAndCheckFinite(clean.get(), 100, 0.5f, flag.get(), nullptr).ok());
  EXPECT_EQ(flag.ToHost()[0], 1);
}

TEST(PrecisionCudaTest, OverflowAfterScalingIsFlagged) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  // An inverse scale > 1 (the scale fell below 1) can overflow a finite gradient.
  DeviceBuffer<float> g(std::vector<float>{1.0f, 3e38f});
  DeviceBuffer<int> flag(1);
  ASSERT_TRUE(UnscaleAndCheckFinite(g.get(), 2, 4.0f, flag.get(), nullptr).ok());
  EXPECT_EQ(flag.ToHost()[0], 1);
}

template <typename T>
void CheckNarrow(float (*to_float)(T), T (*from_float)(float)) {
  const int64_t n = 1000;
  const auto values = RandomFloats(n, 3, -60000.f, 60000.f);
  std::vector<T> g(n);
  for (int64_t i = 0; i < n; ++i) g[i] = from_float(values[i]);
  DeviceBuffer<T> d_g(g);
  DeviceBuffer<int> flag(1);
  ASSERT_TRUE(UnscaleAndCheckFinite(d_g.get(), n, 0.25f, flag.get(), nullptr).ok());
  const std::vector<T> got = d_g.ToHost();
  // Scaling by a power of two is exact in the narrow type too (no value reaches the subnormals).
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(to_float(got[i]), to_float(g[i]) * 0.25f) << i;
  EXPECT_EQ(flag.ToHost()[0], 0);
  g[n / 2] = from_float(kInf);
  d_g.Upload(g);
  ASSERT_TRUE(UnscaleAndCheckFinite(d_g.get(), n, 0.25f, flag.get(), nullptr).ok());
  EXPECT_EQ(flag.ToHost()[0], 1);
}

TEST(PrecisionCudaTest, Bf16AndHalfGradients) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  CheckNarrow<__nv_bfloat16>([](__nv_bfloat16 v) { return __bfloat162float(v); },
                             [](float f) { return __float2bfloat16_rn(f); });
  CheckNarrow<__half>([](__half v) { return __half2float(v); },
                      [](float f) { return __float2half_rn(f); });
}

TEST(PrecisionCudaTest, EmptyAndInvalid) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  EXPECT_TRUE(UnscaleAndCheckFinite(static_cast<float*>(nullptr), 0, 1.f, nullptr, nullptr).ok());
  EXPECT_EQ(UnscaleAndCheckFinite(static_cast<float*>(nullptr), 4, 1.f, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
