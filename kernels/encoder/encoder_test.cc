#include "kernels/encoder/encoder.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cast/cast.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"
#include "kernels/encoder/encoder_reference.h"

namespace dstrain::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::RandomFloats;
using testing::RandomTokens;
using testing::ToDouble;

struct Shape {
  int B, T, C, V, maxT;
};

// Odd C (tails of every vector width), T = 1, a vocabulary smaller than B*T (repeated tokens),
// and the tiny-GPT shape.
const Shape kShapes[] = {{1, 1, 1, 1, 1},  {2, 3, 7, 5, 4},      {4, 16, 33, 11, 20},
                         {3, 1, 17, 2, 1}, {2, 64, 256, 50, 64}, {8, 256, 256, 8192, 256}};

// Forward: one float add, correctly rounded (half an ulp).
constexpr double kForwardRelTol = 6e-8;

// Backward: element e receives k additions of |dout| <= 1 on top of a start value in [-1, 1];
// each float add rounds by at most 2^-24 of a partial sum bounded by k + 1, so the error is below
// (k + 1)^2 * 6e-8. k <= B*T; tests use small B*T or large vocabularies, so bound it by B*T.
double BackwardAbsTol(const Shape& s) {
  const double k = static_cast<double>(s.B) * s.T;
  return (k + 1) * (k + 1) * 6e-8 < 1e-3 ? (k + 1) * (k + 1) * 6e-8 : 1e-3;
}

class EncoderTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

TEST_P(EncoderTest, ForwardMatchesReference) {
  for (const Shape& s : kShapes) {
    const int64_t n = static_cast<int64_t>(s.B) * s.T * s.C;
    const auto tokens = RandomTokens(static_cast<int64_t>(s.B) * s.T, 1, s.V);
    const auto wte = RandomFloats(static_cast<int64_t>(s.V) * s.C, 2);
    const auto wpe = RandomFloats(static_cast<int64_t>(s.maxT) * s.C, 3);
    std::vector<float> out(n + 1, -9.f);
    EncoderForward(out.data(), tokens.data(), wte.data(), wpe.data(), s.B, s.T, s.C);
    std::vector<double> want(n);
    EncoderForwardReference(want.data(), tokens.data(), ToDouble(wte).data(), ToDouble(wpe).data(),
                            s.B, s.T, s.C);
    EXPECT_TRUE(AllClose(out.data(), want.data(), n, 0, kForwardRelTol)) << s.C;
    EXPECT_EQ(out[n], -9.f);
  }
}

// The bf16 table gives bitwise what the fp32 kernel gives on the widened table (widening is
// exact), for every ISA and tail length.
TEST_P(EncoderTest, Bf16TableIsTheWidenedTable) {
  for (const Shape& s : kShapes) {
    const int64_t n = static_cast<int64_t>(s.B) * s.T * s.C;
    const int64_t table = static_cast<int64_t>(s.V) * s.C;
    const auto tokens = RandomTokens(static_cast<int64_t>(s.B) * s.T, 4, s.V);
    const auto wte = RandomFloats(table, 5);
    const auto wpe = RandomFloats(static_cast<int64_t>(s.maxT) * s.C, 6);
    std::vector<uint16_t> wte16(table);
    FloatToHalf(DType::kBF16, wte16.data(), wte.data(), table);
    std::vector<float> widened(table);
    HalfToFloat(DType::kBF16, widened.data(), wte16.data(), table);
    std::vector<float> got(n + 1, -9.f), want(n);
    EncoderForwardBf16(got.data(), tokens.data(), wte16.data(), wpe.data(), s.B, s.T, s.C);
    EncoderForward(want.data(), tokens.data(), widened.data(), wpe.data(), s.B, s.T, s.C);
    EXPECT_EQ(got[n], -9.f);
    got.pop_back();
    EXPECT_TRUE(BitwiseEqual(got, want)) << s.C;
  }
}

TEST_P(EncoderTest, BackwardAccumulatesOverTwoMicroSteps) {
  for (const Shape& s : kShapes) {
    const int64_t rows = static_cast<int64_t>(s.B) * s.T;
    const auto tokens = RandomTokens(rows, 4, s.V);
    auto dwte = RandomFloats(static_cast<int64_t>(s.V) * s.C, 5);
    auto dwpe = RandomFloats(static_cast<int64_t>(s.maxT) * s.C, 6);
    auto want_dwte = ToDouble(dwte), want_dwpe = ToDouble(dwpe);
    for (int step = 0; step < 2; ++step) {
      const auto dout = RandomFloats(rows * s.C, 7 + step);
      EncoderBackward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), s.B, s.T, s.C);
      EncoderBackwardReference(want_dwte.data(), want_dwpe.data(), ToDouble(dout).data(),
                               tokens.data(), s.B, s.T, s.C);
    }
    // Two steps double the number of additions.
    Shape twice = s;
    twice.B *= 2;
    EXPECT_TRUE(AllClose(dwte, want_dwte, BackwardAbsTol(twice), 0)) << s.B << "," << s.T;
    EXPECT_TRUE(AllClose(dwpe, want_dwpe, BackwardAbsTol(twice), 0)) << s.B << "," << s.T;
  }
}

TEST_P(EncoderTest, ZeroBatchIsANoOp) {
  std::vector<float> dwte(4, 1.f), dwpe(4, 2.f);
  EncoderForward(nullptr, nullptr, dwte.data(), dwpe.data(), 0, 3, 4);
  EncoderBackward(dwte.data(), dwpe.data(), nullptr, nullptr, 0, 3, 4);
  EXPECT_EQ(dwte, std::vector<float>(4, 1.f));
  EXPECT_EQ(dwpe, std::vector<float>(4, 2.f));
}

INSTANTIATE_TEST_SUITE_P(AllIsas, EncoderTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

// The backward pass adds in the same order whatever the thread count or ISA: bitwise equal.
TEST(EncoderDeterminismTest, BackwardIsBitwiseReproducible) {
  const int B = 8, T = 256, C = 256, V = 64;  // few tokens: heavy collisions on dwte rows
  const auto tokens = RandomTokens(B * T, 8, V);
  const auto dout = RandomFloats(int64_t{B} * T * C, 9);
  std::vector<float> first_dwte, first_dwpe;
  for (Isa isa : testing::TestIsas()) {
    for (int threads : {1, 2, 3}) {
      ScopedMaxIsa cap(isa);
      testing::ScopedThreads scoped(threads);
      std::vector<float> dwte(V * C, 0.f), dwpe(T * C, 0.f);
      EncoderBackward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
      if (first_dwte.empty()) {
        first_dwte = dwte;
        first_dwpe = dwpe;
        continue;
      }
      EXPECT_TRUE(BitwiseEqual(dwte, first_dwte)) << IsaName(isa) << " threads=" << threads;
      EXPECT_TRUE(BitwiseEqual(dwpe, first_dwpe)) << IsaName(isa) << " threads=" << threads;
    }
  }
}

// The reference backward equals central differences of L = Σ out · dout through the reference
// forward (linear, so the differences are exact up to rounding).
TEST(EncoderReferenceTest, BackwardMatchesFiniteDifferences) {
  const int B = 2, T = 3, C = 4, V = 5;
  const auto tokens = RandomTokens(B * T, 10, V);
  const auto wte = ToDouble(RandomFloats(V * C, 11));
  const auto wpe = ToDouble(RandomFloats(T * C, 12));
  const auto dout = ToDouble(RandomFloats(B * T * C, 13));
  std::vector<double> dwte(V * C, 0.0), dwpe(T * C, 0.0);
  EncoderBackwardReference(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
  auto loss = [&](const std::vector<double>& te, const std::vector<double>& pe) {
    std::vector<double> out(B * T * C);
    EncoderForwardReference(out.data(), tokens.data(), te.data(), pe.data(), B, T, C);
    double l = 0;
    for (size_t i = 0; i < out.size(); ++i) l += out[i] * dout[i];
    return l;
  };
  const auto fd_wte = testing::FiniteDifferenceGradient(
      [&](const std::vector<double>& te) { return loss(te, wpe); }, wte);
  const auto fd_wpe = testing::FiniteDifferenceGradient(
      [&](const std::vector<double>& pe) { return loss(wte, pe); }, wpe);
  for (size_t i = 0; i < dwte.size(); ++i) EXPECT_NEAR(dwte[i], fd_wte[i], 1e-8);
  for (size_t i = 0; i < dwpe.size(); ++i) EXPECT_NEAR(dwpe[i], fd_wpe[i], 1e-8);
}

}  // namespace
}  // namespace dstrain::kernels
