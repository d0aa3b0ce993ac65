#include "kernels/swiglu/swiglu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cast/cast.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"
#include "kernels/swiglu/swiglu_reference.h"

namespace dstrain::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::RandomFloats;
using testing::ToDouble;

struct Shape {
  int64_t N;
  int I;
};

// I = 1, odd I for vector tails (the gate/up halves then start at unaligned offsets), a GPT-2
// sized MLP width and Llama-7B's intermediate size 11008 at a few rows.
const Shape kShapes[] = {{1, 1}, {3, 7}, {5, 33}, {70, 65}, {64, 3072}, {4, 11008}};

// [gate | up] rows: gate U[-8, 8) (both saturated tails of σ and the region around silu's
// minimum at g ≈ −1.28), up U[-2, 2).
std::vector<float> Input(const Shape& s, uint32_t seed) {
  const auto g = RandomFloats(s.N * s.I, seed, -8.f, 8.f), u = RandomFloats(s.N * s.I, seed + 1000);
  std::vector<float> inp(2 * s.N * s.I);
  for (int64_t r = 0; r < s.N; ++r) {
    for (int c = 0; c < s.I; ++c) {
      inp[r * 2 * s.I + c] = g[r * s.I + c];
      inp[r * 2 * s.I + s.I + c] = 2.f * u[r * s.I + c];
    }
  }
  return inp;
}

// Tolerances. Forward: σ carries exp's ≤ 1.2e-7 relative error plus a division, and the two
// products one rounding each: ≤ ~4e-7 relative with no cancellation anywhere, so a relative
// tolerance of 1e-6 (the absolute part only covers exact zeros). d up = dout·g·s likewise.
// d gate: silu'(g) = s·(1 + g·e·s) crosses zero at g ≈ −2.4, where 1 + g·e·s cancels: the error
// there is ~1e-7 of |g·e·s| ≈ 1 times s ≈ 0.08, times |dout·up| ≤ 2, so an absolute part of 1e-7
// on top of the relative 1e-6.
constexpr double kForwardAbsTol = 1e-30, kForwardRelTol = 1e-6;
constexpr double kBackwardAbsTol = 1e-7, kBackwardRelTol = 1e-6;

class SwiGluTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

// The bf16 output is the fp32 output rounded (kernels/cast's FloatToHalf), bit for bit; nothing
// past the end is written.
TEST_P(SwiGluTest, Bf16OutputIsTheFp32OutputRounded) {
  for (const Shape& s : kShapes) {
    const int64_t n = s.N * s.I;
    const auto gu = RandomFloats(2 * n, 41, -8.f, 8.f);
    std::vector<float> out(n);
    SwiGluForward(out.data(), gu.data(), s.N, s.I);
    std::vector<uint16_t> want(n), got(n + 1, 0xabcd);
    FloatToHalf(DType::kBF16, want.data(), out.data(), n);
    SwiGluForward(got.data(), gu.data(), s.N, s.I);
    EXPECT_EQ(std::vector<uint16_t>(got.begin(), got.begin() + n), want) << s.N << "x" << s.I;
    EXPECT_EQ(got[n], 0xabcd);
  }
}

TEST_P(SwiGluTest, ForwardMatchesReference) {
  for (const Shape& s : kShapes) {
    const int64_t n = s.N * s.I;
    const auto inp = Input(s, 1);
    std::vector<float> out(n + 1, -9.f);
    SwiGluForward(out.data(), inp.data(), s.N, s.I);
    std::vector<double> want(n);
    SwiGluForwardReference(want.data(), ToDouble(inp).data(), s.N, s.I);
    EXPECT_TRUE(AllClose(out.data(), want.data(), n, kForwardAbsTol, kForwardRelTol)) << s.I;
    EXPECT_EQ(out[n], -9.f);
  }
}

TEST_P(SwiGluTest, BackwardMatchesReferenceAndOverwrites) {
  double gate_abs = 0, up_rel = 0;
  for (const Shape& s : kShapes) {
    const int64_t n = s.N * s.I;
    const auto inp = Input(s, 2), dout = RandomFloats(n, 3);
    std::vector<float> dinp(2 * n + 1, 55.f);  // garbage: must be overwritten, not added to
    SwiGluBackward(dinp.data(), inp.data(), dout.data(), s.N, s.I);
    std::vector<double> want(2 * n);
    SwiGluBackwardReference(want.data(), ToDouble(inp).data(), ToDouble(dout).data(), s.N, s.I);
    EXPECT_TRUE(AllClose(dinp.data(), want.data(), 2 * n, kBackwardAbsTol, kBackwardRelTol)) << s.I;
    EXPECT_EQ(dinp[2 * n], 55.f);
    for (int64_t i = 0; i < 2 * n; ++i) {
      const double err = std::fabs(dinp[i] - want[i]);
      if ((i / s.I) % 2 == 0) {
        gate_abs = std::max(gate_abs, err);
      } else if (want[i] != 0) {
        up_rel = std::max(up_rel, err / std::fabs(want[i]));
      }
    }
  }
  std::ostringstream text;
  text << "d gate abs " << gate_abs << "; d up rel " << up_rel;
  RecordProperty("measured_backward_error", text.str());
}

TEST_P(SwiGluTest, BackwardMayOverwriteItsInput) {
  const Shape s{9, 45};
  auto inp = Input(s, 4);
  const auto dout = RandomFloats(s.N * s.I, 5);
  std::vector<float> separate(2 * s.N * s.I);
  SwiGluBackward(separate.data(), inp.data(), dout.data(), s.N, s.I);
  SwiGluBackward(inp.data(), inp.data(), dout.data(), s.N, s.I);
  EXPECT_TRUE(BitwiseEqual(inp, separate));
}

// Saturated gates: σ(−100) ≈ 4e-44, exp clamps at e^87.3; everything stays finite and ~0, and
// σ(100) = 1 exactly, so out = g·u and d gate = dout·u.
TEST_P(SwiGluTest, SaturatedGatesStayFinite) {
  const std::vector<float> inp = {-1e4f, -100.f, 100.f, 1e4f, 3.f, 3.f, 3.f, 3.f};
  const std::vector<float> dout = {1.f, 1.f, 1.f, 1.f};
  std::vector<float> out(4), dinp(8);
  SwiGluForward(out.data(), inp.data(), 1, 4);
  SwiGluBackward(dinp.data(), inp.data(), dout.data(), 1, 4);
  EXPECT_NEAR(out[0], 0.f, 1e-30);
  EXPECT_NEAR(out[1], 0.f, 1e-30);
  EXPECT_EQ(out[2], 300.f);
  EXPECT_EQ(out[3], 3e4f);
  EXPECT_NEAR(dinp[0], 0.f, 1e-30);
  EXPECT_NEAR(dinp[1], 0.f, 1e-30);
  EXPECT_EQ(dinp[2], 3.f);
  EXPECT_EQ(dinp[3], 3.f);
  EXPECT_NEAR(dinp[4], 0.f, 1e-30);
  EXPECT_NEAR(dinp[5], 0.f, 1e-30);
  EXPECT_EQ(dinp[6], 100.f);
  EXPECT_EQ(dinp[7], 1e4f);
}

// Row-wise: the split across threads cannot change any value.
TEST_P(SwiGluTest, BitwiseIdenticalAcrossThreadCounts) {
  const Shape s{300, 1000};
  const auto inp = Input(s, 6), dout = RandomFloats(s.N * s.I, 7);
  std::vector<float> first_y, first_g;
  for (int threads : {1, 2, 3}) {
    testing::ScopedThreads scoped(threads);
    std::vector<float> y(s.N * s.I), g(2 * s.N * s.I);
    SwiGluForward(y.data(), inp.data(), s.N, s.I);
    SwiGluBackward(g.data(), inp.data(), dout.data(), s.N, s.I);
    if (first_y.empty()) {
      first_y = y;
      first_g = g;
    } else {
      EXPECT_TRUE(BitwiseEqual(y, first_y)) << threads;
      EXPECT_TRUE(BitwiseEqual(g, first_g)) << threads;
    }
  }
}

TEST_P(SwiGluTest, ZeroRowsIsANoOp) {
  SwiGluForward(static_cast<float*>(nullptr), nullptr, 0, 8);
  SwiGluBackward(nullptr, nullptr, nullptr, 0, 8);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, SwiGluTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

// The float64 backward reference equals central differences of L = Σ out·dout through the
// float64 forward. h = 1e-6: error ~1e-16/h + h²·|L'''| ~ 1e-10.
TEST(SwiGluReferenceTest, BackwardMatchesFiniteDifferences) {
  const int64_t N = 2;
  const int I = 5;
  const auto inp = ToDouble(RandomFloats(2 * N * I, 30, -5.f, 5.f));
  const auto dout = ToDouble(RandomFloats(N * I, 31));
  std::vector<double> dinp(2 * N * I);
  SwiGluBackwardReference(dinp.data(), inp.data(), dout.data(), N, I);
  const auto fd = testing::FiniteDifferenceGradient(
      [&](const std::vector<double>& v) {
        std::vector<double> out(N * I);
        SwiGluForwardReference(out.data(), v.data(), N, I);
        double l = 0;
        for (int64_t i = 0; i < N * I; ++i) l += out[i] * dout[i];
        return l;
      },
      inp);
  for (int64_t i = 0; i < 2 * N * I; ++i) EXPECT_NEAR(dinp[i], fd[i], 1e-8) << i;
}

}  // namespace
}  // namespace dstrain::kernels
