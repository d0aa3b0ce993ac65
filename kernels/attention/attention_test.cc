#include "kernels/attention/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention/attention_reference.h"
#include "kernels/attention/attention_test_shapes.h"
#include "kernels/cast/cast.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"

namespace dstrain::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::RandomFloats;
using testing::ToDouble;

using attention_testing::AttSize;
using attention_testing::OutSize;
using attention_testing::QkvSize;
using attention_testing::Shape;
using attention_testing::StatsSize;

// T = 1; T not a multiple of the 6-row micro-kernel or of any vector width; head sizes 4, 33
// (odd), 24, 64 and 16; and both target head layouts (hs = 64) at reduced batch.
const Shape kShapes[] = {{1, 1, 4, 1},    {2, 5, 12, 3},    {1, 7, 33, 1},
                         {2, 17, 48, 2},  {1, 37, 64, 1},   {2, 64, 128, 2},
                         {1, 100, 80, 5}, {1, 256, 256, 4}, {1, 64, 768, 12}};

// Scores are dot products of hs terms |q·k| <= 1 scaled by 1/sqrt(hs): float rounding leaves
// ~sqrt(hs)·6e-8 absolute in S, i.e. a relative error of a few 1e-7 in P, and the outputs sum
// <= T such terms with |v| <= 1 (error growing like sqrt(T)·1e-7). Backward products chain one
// more such step. Measured worst errors are ~1e-6 (forward) and ~3e-6 (backward, T = 256);
// the tolerances leave 2–5x room. A row's max is one score; its 1 / Σ exp sums T terms.
constexpr double kOutAbsTol = 2e-6, kOutRelTol = 1e-5;
constexpr double kMaxAbsTol = 1e-6, kInvSumRelTol = 2e-6;
constexpr double kGradAbsTol = 1e-5, kGradRelTol = 2e-5;

class AttentionTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

// The stats AttentionForward keeps, in float64 from the definition: per (b, h) and query row i,
// m = max_{j <= i} S_ij and 1 / Σ_{j <= i} exp(S_ij − m), S = Q Kᵀ / sqrt(hs).
std::vector<double> StatsReference(const std::vector<double>& qkv, const Shape& s) {
  const int hs = s.C / s.NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  std::vector<double> stats(2 * int64_t{s.B} * s.NH * s.T);
  for (int b = 0; b < s.B; ++b) {
    for (int h = 0; h < s.NH; ++h) {
      for (int i = 0; i < s.T; ++i) {
        std::vector<double> row(i + 1);
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (int d = 0; d < hs; ++d) {
            dot += qkv[(int64_t{b} * s.T + i) * 3 * s.C + h * hs + d] *
                   qkv[(int64_t{b} * s.T + j) * 3 * s.C + s.C + h * hs + d];
          }
          row[j] = dot * scale;
        }
        double m = row[0];
        for (double x : row) m = std::max(m, x);
        double sum = 0;
        for (double x : row) sum += std::exp(x - m);
        const int64_t at = 2 * ((int64_t{b} * s.NH + h) * s.T + i);
        stats[at] = m;
        stats[at + 1] = 1 / sum;
      }
    }
  }
  return stats;
}

TEST_P(AttentionTest, ForwardMatchesReference) {
  for (const Shape& s : kShapes) {
    const auto qkv = RandomFloats(QkvSize(s), 1);
    const int64_t n_stats = StatsSize(s);
    ASSERT_EQ(n_stats, 2 * int64_t{s.B} * s.NH * s.T);
    std::vector<float> out(OutSize(s), -9.f), stats(n_stats + 3, 12345.f);
    AttentionForward(out.data(), stats.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    std::vector<double> want_out(OutSize(s)), want_att(AttSize(s));
    const auto qkvd = ToDouble(qkv);
    AttentionForwardReference(want_out.data(), want_att.data(), qkvd.data(), s.B, s.T, s.C, s.NH);
    EXPECT_TRUE(AllClose(out, want_out, kOutAbsTol, kOutRelTol)) << s.T << " " << s.C;
    const auto want_stats = StatsReference(qkvd, s);
    for (int64_t r = 0; r < n_stats / 2; ++r) {
      ASSERT_NEAR(stats[2 * r], want_stats[2 * r], kMaxAbsTol) << "row max " << r;
      ASSERT_NEAR(stats[2 * r + 1], want_stats[2 * r + 1], kInvSumRelTol * want_stats[2 * r + 1])
          << "1 / sum " << r;
    }
    for (int64_t i = n_stats; i < n_stats + 3; ++i) ASSERT_EQ(stats[i], 12345.f) << "past the end";
  }
}

// The bf16 out is the fp32 out rounded (kernels/cast's FloatToHalf), bit for bit, with the same
// stats, for every shape (odd head sizes and T not a multiple of the row block included).
TEST_P(AttentionTest, Bf16OutputIsTheFp32OutputRounded) {
  for (const Shape& s : kShapes) {
    const auto qkv = RandomFloats(QkvSize(s), 7);
    std::vector<float> out(OutSize(s)), stats(StatsSize(s)), stats16(StatsSize(s));
    AttentionForward(out.data(), stats.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    std::vector<uint16_t> want(OutSize(s)), got(OutSize(s) + 1, 0xabcd);
    FloatToHalf(DType::kBF16, want.data(), out.data(), OutSize(s));
    AttentionForward(got.data(), stats16.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    EXPECT_EQ(std::vector<uint16_t>(got.begin(), got.end() - 1), want) << s.T << " " << s.C;
    EXPECT_EQ(got.back(), 0xabcd);
    EXPECT_TRUE(BitwiseEqual(stats16, stats));
  }
}

TEST_P(AttentionTest, BackwardMatchesReferenceAndOverwrites) {
  for (const Shape& s : kShapes) {
    const auto qkv = RandomFloats(QkvSize(s), 2), dout = RandomFloats(OutSize(s), 3);
    std::vector<float> out(OutSize(s)), stats(StatsSize(s));
    AttentionForward(out.data(), stats.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    std::vector<float> dqkv(QkvSize(s), 55.f);  // garbage: must be overwritten
    std::vector<float> scratch(AttentionBackwardScratchFloats(s.B, s.T, s.C, s.NH), NAN);
    AttentionBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), stats.data(), s.B, s.T,
                      s.C, s.NH);
    const auto qkvd = ToDouble(qkv);
    std::vector<double> want_out(OutSize(s)), want_att(AttSize(s)), want(QkvSize(s));
    AttentionForwardReference(want_out.data(), want_att.data(), qkvd.data(), s.B, s.T, s.C, s.NH);
    AttentionBackwardReference(want.data(), ToDouble(dout).data(), qkvd.data(), want_att.data(),
                               s.B, s.T, s.C, s.NH);
    EXPECT_TRUE(AllClose(dqkv, want, kGradAbsTol, kGradRelTol)) << s.T << " " << s.C;
  }
}

// The backward pass recomputes the probabilities bitwise: with V the identity (V[t][t] = 1, T <=
// hs), out[i][j] = Σ_k P[i][k] V[k][j] is exactly the forward's P[i][j]; with dO[i][d] = 1 for
// d = i and 0 elsewhere, dV[j][d] = Σ_i P[i][j] dO[i][d] is exactly the backward's P[d][j]
// (every other product is 0, and adding 0 rounds nothing). A differing exponential, sum or
// score anywhere in a recomputed row fails this.
TEST_P(AttentionTest, BackwardRecomputesTheForwardProbabilitiesBitwise) {
  for (const Shape& s : {Shape{1, 30, 64, 2}, Shape{2, 7, 16, 2}, Shape{1, 33, 99, 3}}) {
    const int hs = s.C / s.NH;
    ASSERT_LE(s.T, hs);
    auto qkv = RandomFloats(QkvSize(s), 9, -3.f, 3.f);
    std::vector<float> dout(OutSize(s), 0.f);
    for (int b = 0; b < s.B; ++b) {
      for (int t = 0; t < s.T; ++t) {
        for (int h = 0; h < s.NH; ++h) {
          float* v = &qkv[(int64_t{b} * s.T + t) * 3 * s.C + 2 * s.C + h * hs];
          for (int d = 0; d < hs; ++d) v[d] = d == t ? 1.f : 0.f;
          dout[(int64_t{b} * s.T + t) * s.C + h * hs + t] = 1.f;
        }
      }
    }
    std::vector<float> out(OutSize(s)), stats(StatsSize(s)), dqkv(QkvSize(s));
    std::vector<float> scratch(AttentionBackwardScratchFloats(s.B, s.T, s.C, s.NH));
    AttentionForward(out.data(), stats.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    AttentionBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), stats.data(), s.B, s.T,
                      s.C, s.NH);
    for (int b = 0; b < s.B; ++b) {
      for (int h = 0; h < s.NH; ++h) {
        for (int i = 0; i < s.T; ++i) {
          for (int j = 0; j <= i; ++j) {
            const float forward = out[(int64_t{b} * s.T + i) * s.C + h * hs + j];
            const float recomputed = dqkv[(int64_t{b} * s.T + j) * 3 * s.C + 2 * s.C + h * hs + i];
            ASSERT_GT(forward, 0.f);  // positive and finite: == is bitwise equality
            ASSERT_EQ(recomputed, forward)
                << "b " << b << " h " << h << " P[" << i << "][" << j << "]";
          }
        }
      }
    }
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
    std::vector<float> out(OutSize(s)), stats(StatsSize(s)), dqkv(QkvSize(s));
    std::vector<float> scratch(AttentionBackwardScratchFloats(s.B, s.T, s.C, s.NH), NAN);
    AttentionForward(out.data(), stats.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    AttentionBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), stats.data(), s.B, s.T,
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
    std::vector<float> out(OutSize(s)), stats(StatsSize(s)), dqkv(QkvSize(s));
    AttentionForward(out.data(), stats.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    AttentionBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), stats.data(), s.B, s.T,
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
  EXPECT_EQ(AttentionStateFloats(0, 8, 2), 0);
  EXPECT_EQ(AttentionStateFloats(2, 0, 2), 0);
  EXPECT_EQ(AttentionBackwardScratchFloats(0, 8, 16, 2), 0);
  EXPECT_EQ(AttentionBackwardScratchFloats(2, 0, 16, 2), 0);
  AttentionForward(static_cast<float*>(nullptr), nullptr, nullptr, 0, 8, 16, 2);
  AttentionForward(static_cast<float*>(nullptr), nullptr, nullptr, 2, 0, 16, 2);
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
