// AdamWUpdate / AdamWUpdateMixed on the GPU (and the CPU simulator) vs the float64 reference over
// three steps.
#include "kernels/adamw/cuda/adamw_cuda.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/adamw/adamw_reference.h"
#include "kernels/cuda_common/test_util.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::AllClose;
using testing::DeviceBuffer;
using testing::RandomFloats;
using testing::ToDouble;

// Below a warp, odd, and more than one grid round (1024 blocks x 256 threads).
const int64_t kSizes[] = {1, 7, 33, 1000, 1024 * 256 + 3};
constexpr int kSteps = 3;

AdamWArgs Args(bool adamw_mode, int step) {
  AdamWArgs a;
  a.lr = 3e-3;
  a.beta1 = 0.9;
  a.beta2 = 0.95;
  a.eps = 1e-8;
  a.weight_decay = 0.1;
  a.bias_correction1 = 1 - std::pow(0.9, step);
  a.bias_correction2 = 1 - std::pow(0.95, step);
  a.adamw_mode = adamw_mode;
  a.grad_scale = 0.5;
  return a;
}

// The CPU test's one-step tolerances (adamw_test.cc: about an ulp of each term), times the number
// of steps: each float step starts from the previous float state, and its errors add up.
constexpr double kMomentRelTol = kSteps * 3e-7, kMomentAbsTol = kSteps * 3e-8;
constexpr double kParamRelTol = kSteps * 2e-7, kParamAbsTol = kSteps * 1e-8;

TEST(AdamWCudaTest, ThreeStepsMatchReferenceInBothModes) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  for (bool adamw_mode : {true, false}) {
    for (int64_t n : kSizes) {
      SCOPED_TRACE(::testing::Message() << (adamw_mode ? "AdamW" : "Adam") << " n=" << n);
      std::vector<float> p0 = RandomFloats(n, 1);
      const std::vector<float> m0 = RandomFloats(n, 3, -0.1f, 0.1f);
      const std::vector<float> v0 = RandomFloats(n, 4, 0.f, 0.01f);
      auto pd = ToDouble(p0), md = ToDouble(m0), vd = ToDouble(v0);
      p0.push_back(-7.f);  // sentinel past the end
      DeviceBuffer<float> p(p0), m(m0), v(v0);
      for (int step = 1; step <= kSteps; ++step) {
        const std::vector<float> g = RandomFloats(n, 10 + step);
        DeviceBuffer<float> d_g(g);
        const AdamWArgs a = Args(adamw_mode, step);
        ASSERT_TRUE(AdamWUpdate(p.get(), d_g.get(), m.get(), v.get(), n, a, nullptr).ok());
        AdamWUpdateReference(pd.data(), ToDouble(g).data(), md.data(), vd.data(), n, a);
      }
      std::vector<float> got_p = p.ToHost();
      EXPECT_EQ(got_p[n], -7.f);
      got_p.pop_back();
      EXPECT_TRUE(AllClose(got_p, pd, kParamAbsTol, kParamRelTol));
      EXPECT_TRUE(AllClose(m.ToHost(), md, kMomentAbsTol, kMomentRelTol));
      EXPECT_TRUE(AllClose(v.ToHost(), vd, 0, kMomentRelTol));
    }
  }
}

template <typename T>
uint16_t Bits(T b) {
  uint16_t u;
  std::memcpy(&u, &b, 2);
  return u;
}

__nv_bfloat16 Round(float f, __nv_bfloat16*) { return __float2bfloat16_rn(f); }
__half Round(float f, __half*) { return __float2half_rn(f); }

// The mixed variant updates the fp32 master like AdamWUpdate and publishes the 16-bit rounding
// of the master (Half: bf16 or fp16).
template <typename Half, typename Grad>
void CheckMixed(Grad (*make_grad)(float)) {
  for (int64_t n : {int64_t{33}, int64_t{1024 * 256 + 3}}) {
    SCOPED_TRACE(n);
    const std::vector<float> master0 = RandomFloats(n, 21);
    std::vector<Half> bf0(n, Round(0.f, static_cast<Half*>(nullptr)));
    DeviceBuffer<float> master(master0), m(n), v(n);
    DeviceBuffer<Half> bf(bf0);
    auto pd = ToDouble(master0);
    std::vector<double> md(n, 0.0), vd(n, 0.0);
    for (int step = 1; step <= kSteps; ++step) {
      const std::vector<float> g = RandomFloats(n, 30 + step);
      std::vector<Grad> grad(n);
      std::vector<double> gd(n);
      for (int64_t i = 0; i < n; ++i) {
        grad[i] = make_grad(g[i]);
        gd[i] = static_cast<double>(static_cast<float>(grad[i]));
      }
      DeviceBuffer<Grad> d_grad(grad);
      const AdamWArgs a = Args(true, step);
      ASSERT_TRUE(
          AdamWUpdateMixed(bf.get(), master.get(), d_grad.get(), m.get(), v.get(), n, a, nullptr)
              .ok());
      AdamWUpdateReference(pd.data(), gd.data(), md.data(), vd.data(), n, a);
    }
    const std::vector<float> got_master = master.ToHost();
    EXPECT_TRUE(AllClose(got_master, pd, kParamAbsTol, kParamRelTol));
    EXPECT_TRUE(AllClose(m.ToHost(), md, kMomentAbsTol, kMomentRelTol));
    const std::vector<Half> got_bf = bf.ToHost();
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(Bits(got_bf[i]), Bits(Round(got_master[i], static_cast<Half*>(nullptr)))) << i;
    }
  }
}

TEST(AdamWCudaTest, MixedWithBf16Grads) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  CheckMixed<__nv_bfloat16, __nv_bfloat16>([](float f) { return __float2bfloat16_rn(f); });
}

TEST(AdamWCudaTest, MixedWithFloatGrads) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  CheckMixed<__nv_bfloat16, float>([](float f) { return f; });
}

TEST(AdamWCudaTest, MixedFp16WithFp16AndFloatGrads) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  CheckMixed<__half, __half>([](float f) { return __float2half_rn(f); });
  CheckMixed<__half, float>([](float f) { return f; });
}

TEST(AdamWCudaTest, EmptyAndInvalid) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  const AdamWArgs a;
  EXPECT_TRUE(AdamWUpdate(nullptr, nullptr, nullptr, nullptr, 0, a, nullptr).ok());
  EXPECT_EQ(AdamWUpdate(nullptr, nullptr, nullptr, nullptr, -1, a, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AdamWUpdateMixed(static_cast<__nv_bfloat16*>(nullptr), nullptr,
                             static_cast<const float*>(nullptr), nullptr, nullptr, 5, a, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dstrain::kernels::gpu
