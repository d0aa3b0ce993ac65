#include "kernels/attention/attention.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention/attention_reference.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"

namespace dstrain::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::RandomFloats;
using testing::ToDouble;

struct Shape {
  int B, T, C, NH;
};

// T = 1; T not a multiple of the 6-row micro-kernel or of any vector width; head sizes 4, 33
// (odd), 24, 64 and 16; and both target head layouts (hs = 64) at reduced batch.
const Shape kShapes[] = {{1, 1, 4, 1},    {2, 5, 12, 3},    {1, 7, 33, 1},
                         {2, 17, 48, 2},  {1, 37, 64, 1},   {2, 64, 128, 2},
                         {1, 100, 80, 5}, {1, 256, 256, 4}, {1, 64, 768, 12}};

int64_t QkvSize(const Shape& s) { return int64_t{s.B} * s.T * 3 * s.C; }
int64_t OutSize(const Shape& s) { return int64_t{s.B} * s.T * s.C; }
int64_t AttSize(const Shape& s) { return int64_t{s.B} * s.NH * s.T * s.T; }

// Scores are dot products of hs terms |q·k| <= 1 scaled by 1/sqrt(hs): float rounding leaves
// ~sqrt(hs)·6e-8 absolute in S, i.e. a relative error of a few 1e-7 in P, and the outputs sum
// <= T such terms with |v| <= 1 (error growing like sqrt(T)·1e-7). Backward products chain one
// more such step. Measured worst errors are ~1e-6 (forward) and ~3e-6 (backward, T = 256);
// the tolerances leave 2–5x room.
constexpr double kOutAbsTol = 2e-6, kOutRelTol = 1e-5;
constexpr double kAttAbsTol = 1e-7, kAttRelTol = 2e-6;
constexpr double kGradAbsTol = 1e-5, kGradRelTol = 2e-5;

class AttentionTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

// The lower triangle of every (T, T) block, as a flat list, for comparing att.
template <typename V>
std::vector<V> LowerTriangle(const std::vector<V>& att, const Shape& s) {
  std::vector<V> out;
  for (int64_t bh = 0; bh < int64_t{s.B} * s.NH; ++bh) {
    for (int i = 0; i < s.T; ++i) {
      for (int j = 0; j <= i; ++j) out.push_back(att[(bh * s.T + i) * s.T + j]);
    }
  }
  return out;
}

TEST_P(AttentionTest, ForwardMatchesReference) {
  for (const Shape& s : kShapes) {
    const auto qkv = RandomFloats(QkvSize(s), 1);
    std::vector<float> out(OutSize(s), -9.f), att(AttSize(s), 12345.f);
    AttentionForward(out.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    std::vector<double> want_out(OutSize(s)), want_att(AttSize(s));
    AttentionForwardReference(want_out.data(), want_att.data(), ToDouble(qkv).data(), s.B, s.T, s.C,
                              s.NH);
    EXPECT_TRUE(AllClose(out, want_out, kOutAbsTol, kOutRelTol)) << s.T << " " << s.C;
    EXPECT_TRUE(AllClose(LowerTriangle(att, s), LowerTriangle(want_att, s), kAttAbsTol, kAttRelTol))
        << s.T << " " << s.C;
    // The upper triangle is neither written nor needed.
    for (int64_t bh = 0; bh < int64_t{s.B} * s.NH; ++bh) {
      for (int i = 0; i < s.T; ++i) {
        for (int j = i + 1; j < s.T; ++j) ASSERT_EQ(att[(bh * s.T + i) * s.T + j], 12345.f);
      }
    }
  }
}

TEST_P(AttentionTest, BackwardMatchesReferenceAndOverwrites) {
  for (const Shape& s : kShapes) {
    const auto qkv = RandomFloats(QkvSize(s), 2), dout = RandomFloats(OutSize(s), 3);
    std::vector<float> out(OutSize(s)), att(AttSize(s), 777.f);  // NaN-free junk above diagonal
    AttentionForward(out.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    // Poison the upper triangle: the backward pass must not read it.
    for (int64_t bh = 0; bh < int64_t{s.B} * s.NH; ++bh) {
      for (int i = 0; i < s.T; ++i) {
        for (int j = i + 1; j < s.T; ++j) att[(bh * s.T + i) * s.T + j] = NAN;
      }
    }
    std::vector<float> dqkv(QkvSize(s), 55.f);  // garbage: must be overwritten
    std::vector<float> scratch(AttentionBackwardScratchFloats(s.B, s.T, s.C, s.NH), NAN);
    AttentionBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), s.B, s.T,
                      s.C, s.NH);
    const auto qkvd = ToDouble(qkv);
    std::vector<double> want_out(OutSize(s)), want_att(AttSize(s)), want(QkvSize(s));
    AttentionForwardReference(want_out.data(), want_att.data(), qkvd.data(), s.B, s.T, s.C, s.NH);
    AttentionBackwardReference(want.data(), ToDouble(dout).data(), qkvd.data(), want_att.data(),
                               s.B, s.T, s.C, s.NH);
    EXPECT_TRUE(AllClose(dqkv, want, kGradAbsTol, kGradRelTol)) << s.T << " " << s.C;
  }
}

// Many small shapes: every combination of partial row block (T mod 6), partial vector (hs and T
// mod 8 and 16) and tile width the dispatcher can pick.
TEST_P(AttentionTest, RandomSmallShapesMatchReference) {
  std::mt19937 gen(42);
  for (int trial = 0; trial < 60; ++trial) {
    const int NH = 1 + gen() % 3, hs = 1 + gen() % 70, T = 1 + gen() % 40, B = 1 + gen() % 2;
    const Shape s{B, T, hs * NH, NH};
    const auto qkv = RandomFloats(QkvSize(s), 100 + trial);
    const auto dout = RandomFloats(OutSize(s), 200 + trial);
    std::vector<float> out(OutSize(s)), att(AttSize(s), 0.f), dqkv(QkvSize(s));
    std::vector<float> scratch(AttentionBackwardScratchFloats(s.B, s.T, s.C, s.NH));
    AttentionForward(out.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    AttentionBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), s.B, s.T,
                      s.C, s.NH);
    const auto qkvd = ToDouble(qkv);
    std::vector<double> want_out(OutSize(s)), want_att(AttSize(s)), want(QkvSize(s));
    AttentionForwardReference(want_out.data(), want_att.data(), qkvd.data(), s.B, s.T, s.C, s.NH);
    AttentionBackwardReference(want.data(), ToDouble(dout).data(), qkvd.data(), want_att.data(),
                               s.B, s.T, s.C, s.NH);
    const std::string where = "B=" + std::to_string(B) + " T=" + std::to_string(T) +
                              " hs=" + std::to_string(hs) + " NH=" + std::to_string(NH);
    ASSERT_TRUE(AllClose(out, want_out, kOutAbsTol, kOutRelTol)) << where;
    ASSERT_TRUE(AllClose(dqkv, want, kGradAbsTol, kGradRelTol)) << where;
  }
}

// Each (b, h) pair is computed by one thread in a fixed order: bitwise identical results for any
// thread count. The scratch is sized under the largest thread count used. (The shape is above the
// ~4 MFLOP threshold below which the kernels stay on one thread.)
TEST_P(AttentionTest, BitwiseIdenticalAcrossThreadCounts) {
  const Shape s{4, 90, 96, 3};
  const auto qkv = RandomFloats(QkvSize(s), 4), dout = RandomFloats(OutSize(s), 5);
  std::vector<float> scratch;
  {
    testing::ScopedThreads threads(3);
    scratch.resize(AttentionBackwardScratchFloats(s.B, s.T, s.C, s.NH));
  }
  std::vector<float> first_out, first_dqkv;
  for (int threads : {1, 2, 3}) {
    testing::ScopedThreads scoped(threads);
    std::vector<float> out(OutSize(s)), att(AttSize(s), 0.f), dqkv(QkvSize(s));
    AttentionForward(out.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    AttentionBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), s.B, s.T,
                      s.C, s.NH);
    if (first_out.empty()) {
      first_out = out;
      first_dqkv = dqkv;
    } else {
      EXPECT_TRUE(BitwiseEqual(out, first_out)) << threads;
      EXPECT_TRUE(BitwiseEqual(dqkv, first_dqkv)) << threads;
    }
  }
}

TEST_P(AttentionTest, ZeroSizesAreNoOps) {
  EXPECT_EQ(AttentionBackwardScratchFloats(0, 8, 16, 2), 0);
  EXPECT_EQ(AttentionBackwardScratchFloats(2, 0, 16, 2), 0);
  AttentionForward(nullptr, nullptr, nullptr, 0, 8, 16, 2);
  AttentionForward(nullptr, nullptr, nullptr, 2, 0, 16, 2);
  AttentionBackward(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 8, 16, 2);
  AttentionBackward(nullptr, nullptr, nullptr, nullptr, nullptr, 2, 0, 16, 2);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, AttentionTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

// The float64 backward reference equals central differences of L = Σ out · dout through the
// float64 forward, for every element of qkv (h = 1e-6: error ~1e-10 here).
TEST(AttentionReferenceTest, BackwardMatchesFiniteDifferences) {
  const Shape s{2, 4, 6, 2};
  const auto qkv = ToDouble(RandomFloats(QkvSize(s), 6, -2.f, 2.f));
  const auto dout = ToDouble(RandomFloats(OutSize(s), 7));
  std::vector<double> out(OutSize(s)), att(AttSize(s)), dqkv(QkvSize(s));
  AttentionForwardReference(out.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
  AttentionBackwardReference(dqkv.data(), dout.data(), qkv.data(), att.data(), s.B, s.T, s.C, s.NH);
  const auto fd = testing::FiniteDifferenceGradient(
      [&](const std::vector<double>& x) {
        std::vector<double> o(OutSize(s)), a(AttSize(s));
        AttentionForwardReference(o.data(), a.data(), x.data(), s.B, s.T, s.C, s.NH);
        double l = 0;
        for (int64_t i = 0; i < OutSize(s); ++i) l += o[i] * dout[i];
        return l;
      },
      qkv);
  for (int64_t i = 0; i < QkvSize(s); ++i) EXPECT_NEAR(dqkv[i], fd[i], 1e-8) << i;
}

}  // namespace
}  // namespace dstrain::kernels
