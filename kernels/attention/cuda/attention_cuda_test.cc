// AttentionForward / AttentionBackward on the GPU (and the CPU simulator) vs the float64
// reference (kernels/attention/attention_reference.h).
#include "kernels/attention/cuda/attention_cuda.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention/attention_reference.h"
#include "kernels/cuda_common/test_util.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::AllClose;
using testing::DeviceBuffer;
using testing::RandomFloats;
using testing::ToDouble;

struct Shape {
  int B, T, C, NH;
};

// T = 1; T below, at and above a warp (the softmax's lane loop and tail) and not a multiple of the
// 8 rows per block; one head and several; odd head sizes.
const Shape kShapes[] = {{1, 1, 4, 1},   {2, 5, 12, 3},  {1, 32, 8, 2},
                         {2, 33, 64, 4}, {1, 67, 48, 2}, {3, 40, 15, 3}};

// Scores are sums of HS products of terms in [-1, 1], scaled by 1/sqrt(HS): fp32 rounding of a
// few 1e-7 relative, amplified little by the softmax. Outputs sum T terms <= 1 in magnitude.
double ForwardTol(const Shape& s) { return 2e-6 + 2e-7 * s.T; }
double BackwardTol(const Shape& s) { return 5e-6 + 1e-6 * s.T; }

TEST(AttentionCudaTest, ForwardMatchesReference) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = CublasContext::Create(nullptr);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message()
                 << "B=" << s.B << " T=" << s.T << " C=" << s.C << " NH=" << s.NH);
    const int64_t btc = int64_t{s.B} * s.T * s.C, att_n = int64_t{s.B} * s.NH * s.T * s.T;
    const auto qkv = RandomFloats(3 * btc, 1);
    DeviceBuffer<float> d_qkv(qkv), out(std::vector<float>(btc, 7.f)),
        att(std::vector<float>(att_n, 7.f));
    ASSERT_TRUE(
        AttentionForward(**ctx, out.get(), att.get(), d_qkv.get(), s.B, s.T, s.C, s.NH).ok());
    std::vector<double> want_out(btc), want_att(att_n);
    AttentionForwardReference(want_out.data(), want_att.data(), ToDouble(qkv).data(), s.B, s.T, s.C,
                              s.NH);
    const std::vector<float> got_att = att.ToHost();
    EXPECT_TRUE(AllClose(out.ToHost(), want_out, ForwardTol(s), 1e-6));
    EXPECT_TRUE(AllClose(got_att, want_att, 1e-7, 1e-6));
    for (int64_t r = 0; r < att_n / s.T; ++r) {  // the masked triangle is exactly zero
      for (int j = static_cast<int>(r % s.T) + 1; j < s.T; ++j)
        ASSERT_EQ(got_att[r * s.T + j], 0.f);
    }
  }
}

TEST(AttentionCudaTest, BackwardMatchesReferenceAndOverwrites) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = CublasContext::Create(nullptr);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message()
                 << "B=" << s.B << " T=" << s.T << " C=" << s.C << " NH=" << s.NH);
    const int64_t btc = int64_t{s.B} * s.T * s.C, att_n = int64_t{s.B} * s.NH * s.T * s.T;
    const auto qkv = RandomFloats(3 * btc, 2), dout = RandomFloats(btc, 3);
    DeviceBuffer<float> d_qkv(qkv), d_dout(dout), out(btc), att(att_n),
        dqkv(std::vector<float>(3 * btc, 99.f));  // must be overwritten, not added to
    ASSERT_TRUE(
        AttentionForward(**ctx, out.get(), att.get(), d_qkv.get(), s.B, s.T, s.C, s.NH).ok());
    ASSERT_TRUE(AttentionBackward(**ctx, dqkv.get(), d_dout.get(), d_qkv.get(), att.get(), s.B, s.T,
                                  s.C, s.NH)
                    .ok());
    // The reference backward takes the reference forward's probabilities.
    std::vector<double> ref_out(btc), ref_att(att_n), want(3 * btc);
    const auto qkv_d = ToDouble(qkv);
    AttentionForwardReference(ref_out.data(), ref_att.data(), qkv_d.data(), s.B, s.T, s.C, s.NH);
    AttentionBackwardReference(want.data(), ToDouble(dout).data(), qkv_d.data(), ref_att.data(),
                               s.B, s.T, s.C, s.NH);
    const std::vector<float> got = dqkv.ToHost();
    EXPECT_TRUE(AllClose(got, want, BackwardTol(s), 1e-5));

    // Deterministic: a second backward pass gives the same bits.
    ASSERT_TRUE(AttentionBackward(**ctx, dqkv.get(), d_dout.get(), d_qkv.get(), att.get(), s.B, s.T,
                                  s.C, s.NH)
                    .ok());
    EXPECT_EQ(dqkv.ToHost(), got);
  }
}

TEST(AttentionCudaTest, EmptyAndInvalidShapes) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = CublasContext::Create(nullptr);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  EXPECT_TRUE(AttentionForward(**ctx, nullptr, nullptr, nullptr, 0, 4, 8, 2).ok());
  EXPECT_EQ(AttentionForward(**ctx, nullptr, nullptr, nullptr, 1, 4, 9, 2).code(),
            absl::StatusCode::kInvalidArgument);  // NH does not divide C
  EXPECT_EQ(AttentionBackward(**ctx, nullptr, nullptr, nullptr, nullptr, 1, 4, 8, 0).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AttentionBackward(**ctx, nullptr, nullptr, nullptr, nullptr, 1, 4, 8, 2).code(),
            absl::StatusCode::kInvalidArgument);  // null pointers
}

}  // namespace
}  // namespace dstrain::kernels::gpu
