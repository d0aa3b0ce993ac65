#include "kernels/rope/rope.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"
#include "kernels/rope/rope_reference.h"

namespace dstrain::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::RandomFloats;
using testing::ToDouble;

struct Shape {
  int B, T, H, D, pos_offset;
};

// D/2 below, at and above every vector width (1, 3, 17: tails; 32, 64: Llama-style head sizes
// 64 and 128), one or several heads, and positions offset deep into a long table.
const Shape kShapes[] = {{1, 1, 1, 2, 0},   {2, 5, 3, 6, 0},   {1, 7, 2, 34, 0},
                         {2, 16, 4, 64, 0}, {1, 9, 3, 128, 0}, {2, 12, 2, 128, 4080}};

constexpr int kMaxPos = 4096 + 16;
constexpr double kTheta = 10000.0;

int64_t Elements(const Shape& s) { return int64_t{s.B} * s.T * s.H * s.D; }

// Tolerances. The table entries are within 2^-25 of the exact cos/sin (RopeTable rounds a
// float64 value once; TableIsCorrectlyRoundedFloat64 checks it). An output x1·c − x2·s with
// |x| <= 1 then carries ≤ 2·2^-25 from the table and ≤ 3 roundings of 2^-24 relative to values
// ≤ sqrt(2) (products and the difference; fewer where MulAdd is fused): ≤ ~3e-7 absolute. It is
// absolute because outputs cross zero.
constexpr double kTableAbsTol = 0x1p-25;
constexpr double kRotateAbsTol = 3e-7;

class RopeTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

std::vector<float> Table(int max_pos, int D, double theta = kTheta) {
  std::vector<float> table(RopeTableFloats(max_pos, D));
  RopeTable(table.data(), max_pos, D, theta);
  return table;
}

// Every entry is float64 cos/sin of the float64 angle, rounded once: within half an ulp, at most
// 2^-25 for values in [-1, 1]. For contrast the test records what a table built in fp32 the way
// Hugging Face builds it (inv_freq and the angle p·inv_freq in fp32) would be off by.
TEST(RopeTableTest, TableIsCorrectlyRoundedFloat64) {
  for (double theta : {10000.0, 500000.0}) {
    for (int D : {2, 64, 128}) {
      const int max_pos = 8192;
      const auto table = Table(max_pos, D, theta);
      double worst = 0, worst_fp32_angle = 0;
      for (int p = 0; p < max_pos; ++p) {
        for (int i = 0; i < D / 2; ++i) {
          const double a = RopeAngleReference(p, i, D, theta);
          const double c = table[int64_t{p} * D + i], s = table[int64_t{p} * D + D / 2 + i];
          worst = std::max({worst, std::fabs(c - std::cos(a)), std::fabs(s - std::sin(a))});
          const float inv_freq = 1.f / std::pow(static_cast<float>(theta), 2.f * i / D);
          const float a32 = static_cast<float>(p) * inv_freq;
          worst_fp32_angle = std::max(worst_fp32_angle, std::fabs(std::cos(a32) - std::cos(a)));
        }
      }
      EXPECT_LE(worst, kTableAbsTol) << theta << " " << D;
      std::ostringstream key, text;
      key << "theta" << theta << "_D" << D;
      text << "float64 table " << worst << "; fp32 angles " << worst_fp32_angle;
      RecordProperty(key.str(), text.str());
    }
  }
}

// Pins the convention independently of the reference: with D = 4, dimension 0 pairs with 2 and
// 1 with 3 (rotate_half), θ_0 = 1, θ_1 = theta^(-1/2) = 0.1 for theta = 100.
TEST(RopeTableTest, PairsDimensionIWithIPlusHalf) {
  const auto table = Table(3, 4, 100.0);
  const std::vector<float> x = {1.f, 0.f, 0.f, 0.f, 0.f, 1.f, 0.f, 0.f};  // two tokens, one head
  std::vector<float> y(8);
  RopeForward(y.data(), 4, x.data(), 4, table.data(), 3, 1, 2, 1, 4, 1);  // positions 1 and 2
  EXPECT_FLOAT_EQ(y[0], std::cos(1.0));
  EXPECT_FLOAT_EQ(y[1], 0.f);
  EXPECT_FLOAT_EQ(y[2], std::sin(1.0));
  EXPECT_FLOAT_EQ(y[3], 0.f);
  EXPECT_FLOAT_EQ(y[4], 0.f);
  EXPECT_FLOAT_EQ(y[5], std::cos(0.2));
  EXPECT_FLOAT_EQ(y[6], 0.f);
  EXPECT_FLOAT_EQ(y[7], std::sin(0.2));
}

TEST_P(RopeTest, ForwardAndBackwardMatchReference) {
  const auto table = Table(kMaxPos, 128);
  double worst = 0;
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " H=" << s.H << " D=" << s.D
                                      << " offset=" << s.pos_offset);
    const auto t = s.D == 128 ? table : Table(kMaxPos, s.D);
    const int64_t n = Elements(s), row = int64_t{s.H} * s.D;
    const auto x = RandomFloats(n, 1), dy = RandomFloats(n, 2);
    std::vector<float> y(n + 1, -9.f), dx(n + 1, 55.f);  // garbage: overwritten
    RopeForward(y.data(), row, x.data(), row, t.data(), kMaxPos, s.B, s.T, s.H, s.D, s.pos_offset);
    RopeBackward(dx.data(), row, dy.data(), row, t.data(), kMaxPos, s.B, s.T, s.H, s.D,
                 s.pos_offset);
    std::vector<double> want_y(n), want_dx(n);
    RopeForwardReference(want_y.data(), ToDouble(x).data(), s.B, s.T, s.H, s.D, kTheta,
                         s.pos_offset);
    RopeBackwardReference(want_dx.data(), ToDouble(dy).data(), s.B, s.T, s.H, s.D, kTheta,
                          s.pos_offset);
    EXPECT_TRUE(AllClose(y.data(), want_y.data(), n, kRotateAbsTol, 0));
    EXPECT_TRUE(AllClose(dx.data(), want_dx.data(), n, kRotateAbsTol, 0));
    EXPECT_EQ(y[n], -9.f);
    EXPECT_EQ(dx[n], 55.f);
    for (int64_t i = 0; i < n; ++i) {
      worst = std::max({worst, std::fabs(y[i] - want_y[i]), std::fabs(dx[i] - want_dx[i])});
    }
  }
  std::ostringstream text;
  text << worst;
  RecordProperty("measured_abs_error", text.str());
}

// q and k inside a fused (B, T, (NH + 2·NKV)·D) qkv buffer, rotated in place by one call with
// n_heads = NH + NKV; v is untouched. Then out of place into rows with padding, which stays.
TEST_P(RopeTest, StridedInPlaceOnFusedQkvLeavesVAlone) {
  const int B = 2, T = 9, NH = 4, NKV = 2, D = 16;
  const int64_t stride = int64_t{NH + 2 * NKV} * D, rot = int64_t{NH + NKV} * D;
  const auto table = Table(kMaxPos, D);
  const auto qkv = RandomFloats(B * T * stride, 3);
  std::vector<float> rotated = qkv;
  RopeForward(rotated.data(), stride, rotated.data(), stride, table.data(), kMaxPos, B, T, NH + NKV,
              D, 0);
  std::vector<double> qk(B * T * rot), want(B * T * rot);
  for (int64_t r = 0; r < B * T; ++r) {
    for (int64_t c = 0; c < rot; ++c) qk[r * rot + c] = qkv[r * stride + c];
  }
  RopeForwardReference(want.data(), qk.data(), B, T, NH + NKV, D, kTheta, 0);
  for (int64_t r = 0; r < B * T; ++r) {
    for (int64_t c = 0; c < stride; ++c) {
      if (c < rot) {
        ASSERT_NEAR(rotated[r * stride + c], want[r * rot + c], kRotateAbsTol) << r << " " << c;
      } else {
        ASSERT_EQ(rotated[r * stride + c], qkv[r * stride + c]) << "v changed at " << r << " " << c;
      }
    }
  }
  // Out of place, k only (offset NH·D into each row), into rows of NKV·D + 5 floats.
  const int64_t out_stride = int64_t{NKV} * D + 5;
  std::vector<float> k_out(B * T * out_stride, 7.f);
  RopeForward(k_out.data(), out_stride, qkv.data() + NH * D, stride, table.data(), kMaxPos, B, T,
              NKV, D, 0);
  for (int64_t r = 0; r < B * T; ++r) {
    for (int64_t c = 0; c < out_stride; ++c) {
      const float got = k_out[r * out_stride + c];
      if (c < NKV * D) {
        ASSERT_EQ(got, rotated[r * stride + NH * D + c]) << r << " " << c;
      } else {
        ASSERT_EQ(got, 7.f) << "padding written at " << r << " " << c;
      }
    }
  }
}

TEST_P(RopeTest, BitwiseIdenticalAcrossThreadCountsAndInPlace) {
  const int B = 4, T = 256, H = 8, D = 64;
  const int64_t n = int64_t{B} * T * H * D, row = int64_t{H} * D;
  const auto table = Table(T, D);
  const auto x = RandomFloats(n, 4);
  std::vector<float> first_y, first_dx;
  for (int threads : {1, 2, 3}) {
    testing::ScopedThreads scoped(threads);
    std::vector<float> y(n), dx(n);
    RopeForward(y.data(), row, x.data(), row, table.data(), T, B, T, H, D, 0);
    RopeBackward(dx.data(), row, x.data(), row, table.data(), T, B, T, H, D, 0);
    if (first_y.empty()) {
      first_y = y;
      first_dx = dx;
      std::vector<float> in_place = x;
      RopeForward(in_place.data(), row, in_place.data(), row, table.data(), T, B, T, H, D, 0);
      EXPECT_TRUE(BitwiseEqual(in_place, y));
      in_place = x;
      RopeBackward(in_place.data(), row, in_place.data(), row, table.data(), T, B, T, H, D, 0);
      EXPECT_TRUE(BitwiseEqual(in_place, dx));
    } else {
      EXPECT_TRUE(BitwiseEqual(y, first_y)) << threads;
      EXPECT_TRUE(BitwiseEqual(dx, first_dx)) << threads;
    }
  }
}

TEST_P(RopeTest, EmptyIsANoOp) {
  const auto table = Table(4, 8);
  RopeForward(nullptr, 8, nullptr, 8, table.data(), 4, 0, 4, 1, 8, 0);
  RopeBackward(nullptr, 8, nullptr, 8, table.data(), 4, 2, 0, 1, 8, 0);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, RopeTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

TEST(RopeDeathTest, RejectsOddHeadDimAndPositionsPastTheTable) {
  const auto table = Table(4, 8);
  std::vector<float> x(64);
  EXPECT_DEATH(RopeForward(x.data(), 7, x.data(), 7, table.data(), 4, 1, 1, 1, 7, 0), "head_dim");
  EXPECT_DEATH(RopeForward(x.data(), 8, x.data(), 8, table.data(), 4, 1, 4, 1, 8, 1), "max_pos");
}

// The float64 backward reference equals central differences of L = Σ out·dout through the
// float64 forward (the map is linear, so the difference quotient is exact up to rounding,
// ~1e-16/h = 1e-10).
TEST(RopeReferenceTest, BackwardMatchesFiniteDifferences) {
  const int B = 2, T = 3, H = 2, D = 6, offset = 5;
  const int64_t n = int64_t{B} * T * H * D;
  const auto x = ToDouble(RandomFloats(n, 30)), dout = ToDouble(RandomFloats(n, 31));
  std::vector<double> dx(n);
  RopeBackwardReference(dx.data(), dout.data(), B, T, H, D, kTheta, offset);
  const auto fd = testing::FiniteDifferenceGradient(
      [&](const std::vector<double>& v) {
        std::vector<double> out(n);
        RopeForwardReference(out.data(), v.data(), B, T, H, D, kTheta, offset);
        double l = 0;
        for (int64_t i = 0; i < n; ++i) l += out[i] * dout[i];
        return l;
      },
      x);
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(dx[i], fd[i], 1e-8) << i;
}

}  // namespace
}  // namespace dstrain::kernels
