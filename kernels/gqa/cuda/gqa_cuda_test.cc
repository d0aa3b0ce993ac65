// GqaForward / GqaBackward on the GPU (and the CPU simulator) vs the float64 reference
// (kernels/gqa/gqa_reference.h).
#include "kernels/gqa/cuda/gqa_cuda.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"
#include "kernels/gqa/gqa_reference.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::AllClose;
using testing::DeviceBuffer;
using testing::RandomFloats;
using testing::ToDouble;

struct Shape {
  int B, T, NH, NKV, HS;
};

// T = 1; multi-query (NKV = 1); groups of 2 and 3; NKV = NH (the direct path); T below, at and
// above a warp; odd head sizes.
const Shape kShapes[] = {{1, 1, 2, 1, 4},   {2, 5, 4, 2, 6},  {1, 32, 4, 2, 8},
                         {2, 33, 8, 2, 16}, {1, 67, 6, 3, 9}, {3, 40, 3, 3, 5}};

int64_t QkvSize(const Shape& s) { return int64_t{s.B} * s.T * (s.NH + 2 * s.NKV) * s.HS; }
int64_t OutSize(const Shape& s) { return int64_t{s.B} * s.T * s.NH * s.HS; }
int64_t AttSize(const Shape& s) { return int64_t{s.B} * s.NH * s.T * s.T; }

// The tolerances of attention_cuda_test.cc (the attention kernels do all the arithmetic; the
// expansion copies exactly), with the absolute part of the gradients scaled by the group size G
// for the dK/dV sums of G head gradients.
double ForwardTol(const Shape& s) { return 2e-6 + 2e-7 * s.T; }
double BackwardTol(const Shape& s) { return (5e-6 + 1e-6 * s.T) * (s.NH / s.NKV); }

TEST(GqaCudaTest, ForwardAndBackwardMatchReferenceDeterministically) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = CublasContext::Create(nullptr);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " NH=" << s.NH
                                      << " NKV=" << s.NKV << " HS=" << s.HS);
    const auto qkv = RandomFloats(QkvSize(s), 1), dout = RandomFloats(OutSize(s), 2);
    DeviceBuffer<float> d_qkv(qkv), d_dout(dout), out(std::vector<float>(OutSize(s), 7.f)),
        att(std::vector<float>(AttSize(s), 7.f)),
        dqkv(std::vector<float>(QkvSize(s), 99.f));  // must be overwritten, not added to
    ASSERT_TRUE(
        GqaForward(**ctx, out.get(), att.get(), d_qkv.get(), s.B, s.T, s.NH, s.NKV, s.HS).ok());
    ASSERT_TRUE(GqaBackward(**ctx, dqkv.get(), d_dout.get(), d_qkv.get(), att.get(), s.B, s.T, s.NH,
                            s.NKV, s.HS)
                    .ok());
    const auto qkv_d = ToDouble(qkv);
    std::vector<double> want_out(OutSize(s)), want_att(AttSize(s)), want(QkvSize(s));
    GqaForwardReference(want_out.data(), want_att.data(), qkv_d.data(), s.B, s.T, s.NH, s.NKV,
                        s.HS);
    GqaBackwardReference(want.data(), ToDouble(dout).data(), qkv_d.data(), want_att.data(), s.B,
                         s.T, s.NH, s.NKV, s.HS);
    EXPECT_TRUE(AllClose(out.ToHost(), want_out, ForwardTol(s), 1e-6));
    EXPECT_TRUE(AllClose(att.ToHost(), want_att, 1e-7, 1e-6));  // zeros above the diagonal
    const std::vector<float> got = dqkv.ToHost();
    EXPECT_TRUE(AllClose(got, want, BackwardTol(s), 1e-5));

    // Deterministic: a second backward pass gives the same bits.
    ASSERT_TRUE(GqaBackward(**ctx, dqkv.get(), d_dout.get(), d_qkv.get(), att.get(), s.B, s.T, s.NH,
                            s.NKV, s.HS)
                    .ok());
    EXPECT_EQ(dqkv.ToHost(), got);
  }
}

TEST(GqaCudaTest, EmptyAndInvalidShapes) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = CublasContext::Create(nullptr);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const auto invalid = absl::StatusCode::kInvalidArgument;
  EXPECT_TRUE(GqaForward(**ctx, nullptr, nullptr, nullptr, 0, 4, 4, 2, 8).ok());
  EXPECT_EQ(GqaForward(**ctx, nullptr, nullptr, nullptr, 1, 4, 6, 4, 8).code(),
            invalid);  // NKV does not divide NH
  EXPECT_EQ(GqaBackward(**ctx, nullptr, nullptr, nullptr, nullptr, 1, 4, 4, 0, 8).code(), invalid);
  EXPECT_EQ(GqaBackward(**ctx, nullptr, nullptr, nullptr, nullptr, 1, 4, 4, 2, 8).code(),
            invalid);  // null pointers
}

}  // namespace
}  // namespace dstrain::kernels::gpu
