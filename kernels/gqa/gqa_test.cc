#include "kernels/gqa/gqa.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention/attention.h"
#include "kernels/cast/cast.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"
#include "kernels/gqa/gqa_reference.h"
#include "kernels/rope/rope.h"
#include "kernels/rope/rope_reference.h"

namespace dstrain::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::RandomFloats;
using testing::ToDouble;

struct Shape {
  int B, T, NH, NKV, HS;
};

// T = 1; multi-query (NKV = 1); groups of 2, 3 and 4; NKV = NH (the direct path); odd and tiny
// head sizes; T not a multiple of the attention micro-kernel's 6 rows; a Llama-like head size 64.
const Shape kShapes[] = {{1, 1, 2, 1, 4},   {2, 5, 4, 2, 6},    {1, 17, 6, 3, 33},
                         {2, 37, 8, 2, 16}, {2, 33, 4, 1, 24},  {1, 50, 4, 4, 16},
                         {1, 64, 8, 2, 64}, {1, 128, 12, 4, 32}};

int64_t QkvSize(const Shape& s) { return int64_t{s.B} * s.T * (s.NH + 2 * s.NKV) * s.HS; }
int64_t OutSize(const Shape& s) { return int64_t{s.B} * s.T * s.NH * s.HS; }
int64_t AttSize(const Shape& s) { return int64_t{s.B} * s.NH * s.T * s.T; }
int64_t StatsSize(const Shape& s) { return AttentionStateFloats(s.B, s.T, s.NH); }

// Tolerances: those of attention_test.cc, whose kernel does all the arithmetic here (the expansion
// copies exactly): outputs ~1e-6, gradients a few 1e-6 for T <= 256. dK and dV add G of those
// gradients (one rounding each, values growing with G too): the absolute part scales with G.
constexpr double kOutAbsTol = 2e-6, kOutRelTol = 1e-5;
constexpr double kGradAbsTol = 1e-5, kGradRelTol = 2e-5;

// Runs forward and backward and compares with the float64 reference (the stats themselves are
// checked in attention_test.cc; here, that exactly their floats are written).
void CheckAgainstReference(const Shape& s, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " NH=" << s.NH
                                    << " NKV=" << s.NKV << " HS=" << s.HS);
  const auto qkv = RandomFloats(QkvSize(s), seed), dout = RandomFloats(OutSize(s), seed + 1);
  std::vector<float> out(OutSize(s) + 1, -9.f), stats(StatsSize(s) + 1, 12345.f);
  std::vector<float> fwd_scratch(GqaForwardScratchFloats(s.B, s.T, s.NH, s.NKV, s.HS), NAN);
  GqaForward(out.data(), stats.data(), fwd_scratch.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  EXPECT_EQ(out.back(), -9.f);
  out.pop_back();
  EXPECT_EQ(stats.back(), 12345.f);
  stats.pop_back();
  for (float x : stats) ASSERT_NE(x, 12345.f) << "stats not written";
  std::vector<float> dqkv(QkvSize(s), 55.f);  // garbage: must be overwritten
  std::vector<float> scratch(GqaBackwardScratchFloats(s.B, s.T, s.NH, s.NKV, s.HS), NAN);
  GqaBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), stats.data(), s.B, s.T, s.NH,
              s.NKV, s.HS);

  const auto qkvd = ToDouble(qkv);
  std::vector<double> want_out(OutSize(s)), want_att(AttSize(s)), want(QkvSize(s));
  GqaForwardReference(want_out.data(), want_att.data(), qkvd.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  GqaBackwardReference(want.data(), ToDouble(dout).data(), qkvd.data(), want_att.data(), s.B, s.T,
                       s.NH, s.NKV, s.HS);
  EXPECT_TRUE(AllClose(out, want_out, kOutAbsTol, kOutRelTol));
  const int G = s.NH / s.NKV;
  EXPECT_TRUE(AllClose(dqkv, want, kGradAbsTol * G, kGradRelTol));
}

class GqaTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

// The bf16 out is the fp32 out rounded (kernels/cast's FloatToHalf), bit for bit, with the same
// stats, on the expanding path and the direct one (NKV = NH).
TEST_P(GqaTest, Bf16OutputIsTheFp32OutputRounded) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "T=" << s.T << " NH=" << s.NH << " NKV=" << s.NKV);
    const auto qkv = RandomFloats(QkvSize(s), 51);
    std::vector<float> out(OutSize(s)), stats(StatsSize(s)), stats16(StatsSize(s));
    std::vector<float> scratch(GqaForwardScratchFloats(s.B, s.T, s.NH, s.NKV, s.HS));
    GqaForward(out.data(), stats.data(), scratch.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
    std::vector<uint16_t> want(OutSize(s)), got(OutSize(s) + 1, 0xabcd);
    FloatToHalf(DType::kBF16, want.data(), out.data(), OutSize(s));
    GqaForward(got.data(), stats16.data(), scratch.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
    EXPECT_EQ(std::vector<uint16_t>(got.begin(), got.end() - 1), want);
    EXPECT_EQ(got.back(), 0xabcd);
    EXPECT_TRUE(BitwiseEqual(stats16, stats));
  }
}

TEST_P(GqaTest, ForwardAndBackwardMatchReference) {
  for (const Shape& s : kShapes) CheckAgainstReference(s, 1);
}

TEST_P(GqaTest, RandomSmallShapesMatchReference) {
  std::mt19937 gen(7);
  for (int trial = 0; trial < 30; ++trial) {
    const int NKV = 1 + gen() % 3, G = 1 + gen() % 3;
    const Shape s{1 + static_cast<int>(gen() % 2), 1 + static_cast<int>(gen() % 30), NKV * G, NKV,
                  1 + static_cast<int>(gen() % 40)};
    CheckAgainstReference(s, 100 + trial);
  }
}

TEST_P(GqaTest, BitwiseIdenticalAcrossThreadCounts) {
  const Shape s{3, 40, 8, 2, 32};
  const auto qkv = RandomFloats(QkvSize(s), 20), dout = RandomFloats(OutSize(s), 21);
  std::vector<float> first_out, first_dqkv;
  for (int threads : {1, 2, 3}) {
    testing::ScopedThreads scoped(threads);
    std::vector<float> out(OutSize(s)), stats(StatsSize(s)), dqkv(QkvSize(s));
    std::vector<float> fwd_scratch(GqaForwardScratchFloats(s.B, s.T, s.NH, s.NKV, s.HS));
    std::vector<float> scratch(GqaBackwardScratchFloats(s.B, s.T, s.NH, s.NKV, s.HS));
    GqaForward(out.data(), stats.data(), fwd_scratch.data(), qkv.data(), s.B, s.T, s.NH, s.NKV,
               s.HS);
    GqaBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), stats.data(), s.B, s.T, s.NH,
                s.NKV, s.HS);
    if (first_out.empty()) {
      first_out = out;
      first_dqkv = dqkv;
    } else {
      EXPECT_TRUE(BitwiseEqual(out, first_out)) << threads;
      EXPECT_TRUE(BitwiseEqual(dqkv, first_dqkv)) << threads;
    }
  }
}

// The Llama block's chain on one fused qkv buffer: RoPE in place on q and k (one call, n_heads =
// NH + NKV), GQA forward and backward, RoPE backward in place on dq and dk — against the float64
// references chained the same way. The RoPE outputs carry ≤ 3e-7 (rope_test.cc) into scores of
// HS = 16 terms: a few 1e-7 more in the outputs; the attention tolerances above still hold.
TEST_P(GqaTest, ComposesWithRopeOnTheFusedLayout) {
  const int B = 2, T = 20, NH = 6, NKV = 2, HS = 16, G = NH / NKV;
  const Shape s{B, T, NH, NKV, HS};
  const int64_t row = int64_t{NH + 2 * NKV} * HS, qk = int64_t{NH + NKV} * HS;
  std::vector<float> table(RopeTableFloats(T, HS));
  RopeTable(table.data(), T, HS, 10000.0);
  const auto qkv = RandomFloats(QkvSize(s), 30), dout = RandomFloats(OutSize(s), 31);

  std::vector<float> rotated = qkv, out(OutSize(s)), stats(StatsSize(s)), dqkv(QkvSize(s));
  RopeForward(rotated.data(), row, rotated.data(), row, table.data(), T, B, T, NH + NKV, HS, 0);
  std::vector<float> fwd_scratch(GqaForwardScratchFloats(B, T, NH, NKV, HS));
  std::vector<float> scratch(GqaBackwardScratchFloats(B, T, NH, NKV, HS));
  GqaForward(out.data(), stats.data(), fwd_scratch.data(), rotated.data(), B, T, NH, NKV, HS);
  GqaBackward(dqkv.data(), scratch.data(), dout.data(), rotated.data(), stats.data(), B, T, NH, NKV,
              HS);
  RopeBackward(dqkv.data(), row, dqkv.data(), row, table.data(), T, B, T, NH + NKV, HS, 0);

  // Reference: q/k rows gathered, rotated, scattered back; then GQA; then the inverse rotation.
  auto gather = [&](const std::vector<double>& full) {
    std::vector<double> part(int64_t{B} * T * qk);
    for (int64_t r = 0; r < int64_t{B} * T; ++r) {
      for (int64_t c = 0; c < qk; ++c) part[r * qk + c] = full[r * row + c];
    }
    return part;
  };
  auto scatter = [&](const std::vector<double>& part, std::vector<double>* full) {
    for (int64_t r = 0; r < int64_t{B} * T; ++r) {
      for (int64_t c = 0; c < qk; ++c) (*full)[r * row + c] = part[r * qk + c];
    }
  };
  std::vector<double> ref_qkv = ToDouble(qkv), part = gather(ref_qkv), rot(part.size());
  RopeForwardReference(rot.data(), part.data(), B, T, NH + NKV, HS, 10000.0, 0);
  scatter(rot, &ref_qkv);
  std::vector<double> want_out(OutSize(s)), want_att(AttSize(s)), want(QkvSize(s));
  GqaForwardReference(want_out.data(), want_att.data(), ref_qkv.data(), B, T, NH, NKV, HS);
  GqaBackwardReference(want.data(), ToDouble(dout).data(), ref_qkv.data(), want_att.data(), B, T,
                       NH, NKV, HS);
  part = gather(want);
  RopeBackwardReference(rot.data(), part.data(), B, T, NH + NKV, HS, 10000.0, 0);
  scatter(rot, &want);
  EXPECT_TRUE(AllClose(out, want_out, kOutAbsTol, kOutRelTol));
  EXPECT_TRUE(AllClose(dqkv, want, kGradAbsTol * G, kGradRelTol));
}

TEST_P(GqaTest, EmptyIsANoOp) {
  EXPECT_EQ(GqaForwardScratchFloats(0, 4, 4, 2, 8), 0);
  EXPECT_EQ(GqaBackwardScratchFloats(2, 0, 4, 2, 8), 0);
  GqaForward(static_cast<float*>(nullptr), nullptr, nullptr, nullptr, 0, 4, 4, 2, 8);
  GqaBackward(nullptr, nullptr, nullptr, nullptr, nullptr, 2, 0, 4, 2, 8);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, GqaTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

TEST(GqaDeathTest, RejectsKvHeadsThatDoNotDivideQueryHeads) {
  EXPECT_DEATH(GqaForwardScratchFloats(1, 4, 6, 4, 8), "NH % NKV");
  EXPECT_DEATH(GqaBackwardScratchFloats(1, 4, 6, 0, 8), "NKV > 0");
}

// The float64 backward reference (with its summed dK/dV) equals central differences of
// L = Σ out·dout through the float64 forward, for every element of qkv. h = 1e-6: error
// ~1e-16/h + h²·|L'''| ~ 1e-10.
TEST(GqaReferenceTest, BackwardMatchesFiniteDifferences) {
  const int B = 1, T = 4, NH = 4, NKV = 2, HS = 3;
  const Shape s{B, T, NH, NKV, HS};
  const auto qkv = ToDouble(RandomFloats(QkvSize(s), 40, -2.f, 2.f));
  const auto dout = ToDouble(RandomFloats(OutSize(s), 41));
  std::vector<double> out(OutSize(s)), att(AttSize(s)), dqkv(QkvSize(s));
  GqaForwardReference(out.data(), att.data(), qkv.data(), B, T, NH, NKV, HS);
  GqaBackwardReference(dqkv.data(), dout.data(), qkv.data(), att.data(), B, T, NH, NKV, HS);
  const auto fd = testing::FiniteDifferenceGradient(
      [&](const std::vector<double>& v) {
        std::vector<double> o(OutSize(s)), a(AttSize(s));
        GqaForwardReference(o.data(), a.data(), v.data(), B, T, NH, NKV, HS);
        double l = 0;
        for (int64_t i = 0; i < OutSize(s); ++i) l += o[i] * dout[i];
        return l;
      },
      qkv);
  for (int64_t i = 0; i < QkvSize(s); ++i) EXPECT_NEAR(dqkv[i], fd[i], 1e-8) << i;
}

}  // namespace
}  // namespace dstrain::kernels
