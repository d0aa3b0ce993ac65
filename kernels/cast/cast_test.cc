#include "kernels/cast/cast.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"

namespace dstrain::kernels {
namespace {

// ---- An independent reference, from the IEEE 754 definitions ----------------------------------
// Formats are described by their field widths; values are decoded into double (exact for both
// formats) and rounding picks the nearer of the two neighbouring representable values by exact
// comparison, never by bit manipulation.

struct Format {
  int exp_bits;
  int man_bits;
  int Bias() const { return (1 << (exp_bits - 1)) - 1; }
  uint16_t InfPattern() const { return static_cast<uint16_t>(((1 << exp_bits) - 1) << man_bits); }
};

Format FormatOf(DType type) { return type == DType::kBF16 ? Format{8, 7} : Format{5, 10}; }

const char* Name(DType type) { return type == DType::kBF16 ? "bf16" : "fp16"; }

bool IsNanPattern(DType type, uint16_t h) {
  const Format f = FormatOf(type);
  return (h & 0x7fff) > f.InfPattern();
}

// The value of a 16-bit pattern (NaN patterns give NaN).
double Decode(DType type, uint16_t h) {
  const Format f = FormatOf(type);
  const int e = (h >> f.man_bits) & ((1 << f.exp_bits) - 1);
  const int m = h & ((1 << f.man_bits) - 1);
  const double sign = (h & 0x8000) != 0 ? -1.0 : 1.0;
  if (e == (1 << f.exp_bits) - 1) return m == 0 ? sign * INFINITY : NAN;
  if (e == 0) return sign * std::ldexp(m, 1 - f.Bias() - f.man_bits);  // subnormal
  return sign * std::ldexp((1 << f.man_bits) + m, e - f.Bias() - f.man_bits);
}

// The value of the non-negative pattern p for rounding, where the infinity pattern stands for
// 2^(emax + 1): IEEE rounds as if the exponent were unbounded, then overflows to infinity.
double Magnitude(DType type, uint16_t p) {
  const Format f = FormatOf(type);
  return p == f.InfPattern() ? std::ldexp(1.0, f.Bias() + 1) : Decode(type, p);
}

// Round to nearest, ties to the even pattern, of a non-NaN float.
uint16_t RoundReference(DType type, float x) {
  const Format f = FormatOf(type);
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(x));
  if (std::isinf(a)) return sign | f.InfPattern();
  // The largest finite pattern p with Magnitude(p) <= a (magnitudes increase with the pattern).
  uint32_t lo = 0, hi = f.InfPattern();  // Magnitude(lo) <= a; everything from hi on is above a
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (Magnitude(type, static_cast<uint16_t>(mid)) <= a) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const uint16_t p = static_cast<uint16_t>(lo);
  // Both distances are exact in double: each fits in far fewer than 53 bits.
  const double below = a - Magnitude(type, p);
  const double above = Magnitude(type, p + 1) - a;
  uint16_t r = p;
  if (above < below || (above == below && (p & 1) != 0)) r = p + 1;
  return sign | r;
}

// The NaN results cast.h documents: sign kept, quiet bit set, top payload bits kept (what the
// x86 conversion instructions do, so every ISA agrees bitwise).
uint16_t NarrowNan(DType type, float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  if (type == DType::kBF16) return static_cast<uint16_t>((b >> 16) | 0x40);
  return static_cast<uint16_t>(((b >> 16) & 0x8000) | 0x7e00 | ((b >> 13) & 0x3ff));
}
uint32_t WidenNan(DType type, uint16_t h) {
  if (type == DType::kBF16) return uint32_t{h} << 16;
  return (uint32_t{h & 0x8000u} << 16) | 0x7fc00000u | (uint32_t{h & 0x3ffu} << 13);
}

uint16_t NarrowReference(DType type, float x) {
  return std::isnan(x) ? NarrowNan(type, x) : RoundReference(type, x);
}

uint32_t Bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

float FromBits(uint32_t b) {
  float x;
  std::memcpy(&x, &b, sizeof(x));
  return x;
}

// ---- Inputs ------------------------------------------------------------------------------------

// For every non-negative finite pattern p and its successor: p's value and the tie halfway to the
// successor (representable in fp32: one bit more than the format), each with its fp32 neighbours,
// in both signs. This covers ties in every binade, the subnormals, the tie at the smallest
// subnormal, and the overflow threshold (bf16 (2 − 2^-8)·2^127, fp16 65520) with its neighbours.
// Then fp32 specials and random bit patterns over the whole fp32 range.
std::vector<float> TrickyFloats(DType type) {
  const Format f = FormatOf(type);
  std::vector<float> v;
  for (uint32_t p = 0; p < f.InfPattern(); ++p) {
    const double lo = Magnitude(type, static_cast<uint16_t>(p));
    const double hi = Magnitude(type, static_cast<uint16_t>(p + 1));
    const float value = static_cast<float>(lo), tie = static_cast<float>((lo + hi) / 2);
    for (float x : {value, std::nextafter(value, INFINITY), tie, std::nextafter(tie, 0.f),
                    std::nextafter(tie, INFINITY)}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  for (uint32_t b : {0x00000001u, 0x00000002u, 0x007fffffu, 0x00800000u, 0x00ffffffu, 0x7f7fffffu,
                     0x7f800000u, 0x7f800001u, 0x7fa00000u, 0x7fbfffffu, 0x7fc00000u, 0x7fffffffu,
                     0x7f802000u, 0x7f801fffu, 0x33000000u, 0x33000001u, 0x32ffffffu, 0x387fe000u,
                     0x387ff000u, 0x477fe000u, 0x477fefffu, 0x477ff000u}) {
    v.push_back(FromBits(b));
    v.push_back(FromBits(b | 0x80000000u));
  }
  std::mt19937 gen(1234);
  for (int i = 0; i < 200000; ++i) v.push_back(FromBits(gen()));
  // Odd length: the vector loops end in a partial vector.
  if (v.size() % 2 == 0) v.push_back(1.f);
  return v;
}

// n finite patterns: RandomFloats in [lo, hi) rounded by the reference.
std::vector<uint16_t> RandomHalves(DType type, int64_t n, uint32_t seed, float lo, float hi) {
  std::vector<uint16_t> h(n);
  const auto x = testing::RandomFloats(n, seed, lo, hi);
  for (int64_t i = 0; i < n; ++i) h[i] = RoundReference(type, x[i]);
  return h;
}

constexpr DType kTypes[] = {DType::kBF16, DType::kF16};
constexpr uint16_t kSentinel16 = 0x1234;
constexpr float kSentinel32 = -12345.f;

class CastTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

// ---- HalfToFloat -------------------------------------------------------------------------------

TEST_P(CastTest, HalfToFloatIsExactForAll65536Patterns) {
  for (DType type : kTypes) {
    std::vector<uint16_t> in(65536);
    for (int i = 0; i < 65536; ++i) in[i] = static_cast<uint16_t>(i);
    std::vector<float> out(65536 + 3, kSentinel32);
    HalfToFloat(type, out.data(), in.data(), 65536);
    for (int i = 0; i < 65536; ++i) {
      const uint16_t h = in[i];
      const uint32_t want =
          IsNanPattern(type, h) ? WidenNan(type, h) : Bits(static_cast<float>(Decode(type, h)));
      ASSERT_EQ(Bits(out[i]), want) << Name(type) << " pattern 0x" << std::hex << h;
      if (IsNanPattern(type, h)) {
        ASSERT_TRUE(std::isnan(out[i]));
      }
    }
    for (int i = 65536; i < 65536 + 3; ++i) ASSERT_EQ(out[i], kSentinel32);
  }
}

TEST_P(CastTest, HalfToFloatShortAndOddLengths) {
  for (DType type : kTypes) {
    for (int64_t n : {0, 1, 7, 15, 17, 33}) {
      const auto in = RandomHalves(type, n, 3, -2.f, 2.f);
      std::vector<float> out(n + 5, kSentinel32);
      HalfToFloat(type, out.data(), in.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], static_cast<float>(Decode(type, in[i])));
      for (int64_t i = n; i < n + 5; ++i) ASSERT_EQ(out[i], kSentinel32) << "wrote past n=" << n;
    }
  }
}

// ---- FloatToHalf -------------------------------------------------------------------------------

TEST_P(CastTest, FloatToHalfRoundsToNearestEvenOnTrickyAndRandomFloats) {
  for (DType type : kTypes) {
    const auto in = TrickyFloats(type);
    const int64_t n = static_cast<int64_t>(in.size());
    std::vector<uint16_t> out(n + 3, kSentinel16);
    FloatToHalf(type, out.data(), in.data(), n);
    int64_t failures = 0;
    for (int64_t i = 0; i < n && failures < 10; ++i) {
      const uint16_t want = NarrowReference(type, in[i]);
      if (out[i] != want) {
        ++failures;
        ADD_FAILURE() << Name(type) << " of " << in[i] << " (0x" << std::hex << Bits(in[i])
                      << "): got 0x" << out[i] << ", want 0x" << want;
      }
    }
    for (int64_t i = n; i < n + 3; ++i) ASSERT_EQ(out[i], kSentinel16) << "wrote past the end";
  }
}

TEST_P(CastTest, FloatToHalfSpecialValues) {
  // A few results spelled out, as a check on the reference itself.
  const float in[] = {
      1.f,      -2.f,     65504.f,  65519.996f,      65520.f,       1e6f,
      INFINITY, 0x1p-24f, 0x1p-25f, 0x1.000002p-25f, 1.f + 0x1p-8f, 1.f + 0x1p-7f + 0x1p-8f};
  const uint16_t want_f16[] = {0x3c00, 0xc000, 0x7bff, 0x7bff, 0x7c00, 0x7c00,
                               0x7c00, 0x0001, 0x0000, 0x0001, 0x3c04, 0x3c0c};
  const uint16_t want_bf16[] = {0x3f80, 0xc000, 0x4780, 0x4780, 0x4780, 0x4974,
                                0x7f80, 0x3380, 0x3300, 0x3300, 0x3f80, 0x3f82};
  const int n = sizeof(in) / sizeof(in[0]);
  std::vector<uint16_t> out(n);
  FloatToHalf(DType::kF16, out.data(), in, n);
  for (int i = 0; i < n; ++i) EXPECT_EQ(out[i], want_f16[i]) << "fp16 of " << in[i];
  FloatToHalf(DType::kBF16, out.data(), in, n);
  for (int i = 0; i < n; ++i) EXPECT_EQ(out[i], want_bf16[i]) << "bf16 of " << in[i];
  // NaN stays NaN, in both signs, whatever the payload.
  for (DType type : kTypes) {
    const float nans[] = {FromBits(0x7f800001u), FromBits(0xff800001u), FromBits(0x7fc00000u),
                          FromBits(0xffffffffu)};
    uint16_t h[4];
    FloatToHalf(type, h, nans, 4);
    for (int i = 0; i < 4; ++i) {
      EXPECT_TRUE(IsNanPattern(type, h[i])) << Name(type) << " " << i;
      EXPECT_EQ(h[i] >> 15, Bits(nans[i]) >> 31);
    }
  }
}

// ---- RoundToHalf --------------------------------------------------------------------------------

// The reference's rounding, then its widening: in place and into another array, on every tricky
// and random float (odd length, so the vector loops end in a partial vector).
TEST_P(CastTest, RoundToHalfIsTheReferenceRoundingWidened) {
  for (DType type : kTypes) {
    const auto in = TrickyFloats(type);
    const int64_t n = static_cast<int64_t>(in.size());
    std::vector<float> out(n + 3, kSentinel32);
    RoundToHalf(type, out.data(), in.data(), n);
    auto in_place = in;
    RoundToHalf(type, in_place.data(), in_place.data(), n);
    int64_t failures = 0;
    for (int64_t i = 0; i < n && failures < 10; ++i) {
      const uint16_t h = NarrowReference(type, in[i]);
      const uint32_t want =
          IsNanPattern(type, h) ? WidenNan(type, h) : Bits(static_cast<float>(Decode(type, h)));
      if (Bits(out[i]) != want || Bits(in_place[i]) != want) {
        ++failures;
        ADD_FAILURE() << Name(type) << " of " << in[i] << " (0x" << std::hex << Bits(in[i])
                      << "): got 0x" << Bits(out[i]) << " (in place 0x" << Bits(in_place[i])
                      << "), want 0x" << want;
      }
    }
    for (int64_t i = n; i < n + 3; ++i) ASSERT_EQ(out[i], kSentinel32) << "wrote past the end";
  }
}

// ---- CastWithColumnSums ------------------------------------------------------------------------

// The cast is FloatToHalf's (out16) or RoundToHalf's (out32), and each column sum has the bits of
// the sequential loop, added to what colsum held: on the tricky floats (the cast) and on random
// ones in shapes that end rows, row groups, strips and vectors part way (the sums). Nothing is
// written past either output.
TEST_P(CastTest, CastWithColumnSumsIsTheCastAndTheSequentialColumnSums) {
  // Four threads on any machine: uneven strips (the largest shape splits 1031 columns four ways).
  testing::ScopedThreads threads(4);
  for (DType type : kTypes) {
    const std::vector<float> tricky = TrickyFloats(type);
    struct Case {
      int64_t rows, cols;
      bool is_tricky;
    };
    const int64_t tricky_cols = 1031;
    const std::vector<Case> cases = {
        {1, 1, false},
        {3, 7, false},
        {5, 64, false},
        {17, 100, false},
        {129, 300, false},
        {300, 1031, false},
        {static_cast<int64_t>(tricky.size()) / tricky_cols, tricky_cols, true}};
    for (const Case& c : cases) {
      const int64_t n = c.rows * c.cols;
      const std::vector<float> in =
          c.is_tricky ? std::vector<float>(tricky.begin(), tricky.begin() + n)
                      : testing::RandomFloats(n, static_cast<uint32_t>(n), -2.f, 2.f);
      std::vector<float> start(c.cols);
      for (int64_t j = 0; j < c.cols; ++j) start[j] = 0.25f * static_cast<float>(j);
      for (bool to16 : {true, false}) {
        SCOPED_TRACE(::testing::Message() << Name(type) << " " << c.rows << "x" << c.cols
                                          << (to16 ? " into 16 bits" : " rounded in fp32"));
        std::vector<uint16_t> out16(to16 ? n + 3 : 0, kSentinel16);
        std::vector<float> out32(to16 ? 0 : n + 3, kSentinel32);
        std::vector<float> colsum = start;
        colsum.push_back(kSentinel32);
        CastWithColumnSums(type, to16 ? out16.data() : nullptr, to16 ? nullptr : out32.data(),
                           colsum.data(), in.data(), c.rows, c.cols);
        int64_t failures = 0;
        for (int64_t i = 0; i < n && failures < 10; ++i) {
          const uint16_t h = NarrowReference(type, in[i]);
          const uint32_t want32 =
              IsNanPattern(type, h) ? WidenNan(type, h) : Bits(static_cast<float>(Decode(type, h)));
          if (to16 ? out16[i] != h : Bits(out32[i]) != want32) {
            ++failures;
            ADD_FAILURE() << "element " << i << " (0x" << std::hex << Bits(in[i]) << ") cast to 0x"
                          << (to16 ? out16[i] : Bits(out32[i])) << ", want 0x"
                          << (to16 ? uint32_t{h} : want32);
          }
        }
        for (int64_t i = n; i < n + 3; ++i) {
          ASSERT_TRUE(to16 ? out16[i] == kSentinel16 : out32[i] == kSentinel32)
              << "wrote past the end";
        }
        ASSERT_EQ(colsum[c.cols], kSentinel32) << "wrote past the column sums";
        for (int64_t j = 0; j < c.cols && failures < 20; ++j) {
          float acc = 0.f;
          for (int64_t i = 0; i < c.rows; ++i) acc += in[i * c.cols + j];
          const float want = start[j] + acc;
          if (Bits(colsum[j]) != Bits(want) && !(std::isnan(colsum[j]) && std::isnan(want))) {
            ++failures;
            ADD_FAILURE() << "column " << j << ": sum " << colsum[j] << ", want " << want;
          }
        }
      }
    }
  }
}

// ---- AccumulateIntoHalf ------------------------------------------------------------------------

TEST_P(CastTest, AccumulateIntoHalfRoundsTheFloatSumTwice) {
  for (DType type : kTypes) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{19}, int64_t{1000}, (int64_t{1} << 17) + 5}) {
      auto acc = RandomHalves(type, n, 7, -2.f, 2.f);
      const auto in1 = testing::RandomFloats(n, 8, -0.01f, 0.01f);
      const auto in2 = testing::RandomFloats(n, 9, -3.f, 3.f);
      std::vector<uint16_t> want = acc;
      for (int64_t i = 0; i < n; ++i) {
        for (float x : {in1[i], in2[i]}) {
          const float sum = static_cast<float>(Decode(type, want[i])) + x;  // fp32 add
          want[i] = RoundReference(type, sum);
        }
      }
      acc.resize(n + 3, kSentinel16);
      AccumulateIntoHalf(type, acc.data(), in1.data(), n);
      AccumulateIntoHalf(type, acc.data(), in2.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(acc[i], want[i]) << Name(type) << " n=" << n << " element " << i;
      }
      for (int64_t i = n; i < n + 3; ++i) ASSERT_EQ(acc[i], kSentinel16);
    }
  }
}

TEST_P(CastTest, AccumulateIntoHalfOverflowsAndKeepsNan) {
  // fp16: 65504 + 16 = 65520 rounds to inf; bf16 keeps it finite. NaN + x stays NaN.
  std::vector<uint16_t> f16 = {0x7bff, 0x7e00, 0x3c00};
  const float add[] = {16.f, 1.f, -1.f};
  AccumulateIntoHalf(DType::kF16, f16.data(), add, 3);
  EXPECT_EQ(f16, (std::vector<uint16_t>{0x7c00, 0x7e00, 0x0000}));
  std::vector<uint16_t> bf16 = {0x4780, 0x7fc0, 0x3f80};
  AccumulateIntoHalf(DType::kBF16, bf16.data(), add, 3);
  EXPECT_EQ(bf16, (std::vector<uint16_t>{0x4780, 0x7fc0, 0x0000}));
}

// ---- SumSquaresHalf ----------------------------------------------------------------------------

// The reference sums the exact squares in long double (64-bit significand): after n positive
// terms its relative error is at most n·2^-64. The kernel's is at most (512 + 5 + blocks)·2^-53:
// each of its 32 partial sums per 16K-element block adds 512 terms, the 32 are combined in 5
// rounds, and the block sums are added one by one. The sum of both bounds is the tolerance.
double SumSquaresTolerance(int64_t n) {
  const int64_t blocks = (n + (1 << 14) - 1) >> 14;
  return (512 + 5 + blocks) * 0x1p-53 + n * 0x1p-64;
}

TEST_P(CastTest, SumSquaresHalfMatchesLongDoubleReference) {
  for (DType type : kTypes) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{31}, int64_t{33}, int64_t{16384},
                      int64_t{16385}, (int64_t{1} << 20) + 9}) {
      const auto x = RandomHalves(type, n, 11, -4.f, 4.f);
      long double want = 0;
      for (uint16_t h : x) want += static_cast<long double>(Decode(type, h)) * Decode(type, h);
      const double got = SumSquaresHalf(type, x.data(), n);
      EXPECT_LE(std::fabs(got - static_cast<double>(want)),
                SumSquaresTolerance(n) * static_cast<double>(want))
          << Name(type) << " n=" << n << " got " << got << " want " << static_cast<double>(want);
    }
  }
}

TEST_P(CastTest, SumSquaresHalfPropagatesInfAndNan) {
  for (DType type : kTypes) {
    const uint16_t inf = FormatOf(type).InfPattern();
    const uint16_t nan = inf | 1;
    // Positions in the first block, in a later block, and in the final partial vector.
    for (int64_t n : {int64_t{5}, int64_t{100}, (int64_t{1} << 16) + 3}) {
      for (int64_t pos : {int64_t{0}, n / 2, n - 1}) {
        auto x = RandomHalves(type, n, 12, -1.f, 1.f);
        x[pos] = inf | 0x8000;  // -inf squares to +inf
        EXPECT_EQ(SumSquaresHalf(type, x.data(), n), INFINITY) << Name(type) << " " << n;
        x[pos] = nan;
        EXPECT_TRUE(std::isnan(SumSquaresHalf(type, x.data(), n))) << Name(type) << " " << n;
        x[n - 1 - pos] = inf;  // inf and NaN: NaN
        if (n - 1 - pos != pos) {
          EXPECT_TRUE(std::isnan(SumSquaresHalf(type, x.data(), n)));
        }
      }
    }
  }
}

TEST_P(CastTest, SumSquaresHalfIsIndependentOfThreadCount) {
  for (DType type : kTypes) {
    const int64_t n = (int64_t{1} << 21) + 77;
    const auto x = RandomHalves(type, n, 13, -1.f, 1.f);
    double first = 0;
    for (int threads : {1, 2, 3}) {
      testing::ScopedThreads scoped(threads);
      const double s = SumSquaresHalf(type, x.data(), n);
      if (threads == 1) first = s;
      EXPECT_EQ(std::memcmp(&s, &first, sizeof(double)), 0) << threads << ": " << s;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, CastTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

// Every ISA sums in the same order (cast_body.inc), so the sums agree to the bit, not only within
// the tolerance above.
TEST(CastCrossIsaTest, SumSquaresHalfIsBitwiseTheSameOnEveryIsa) {
  for (DType type : kTypes) {
    for (int64_t n : {int64_t{45}, (int64_t{1} << 18) + 21}) {
      // Mixed magnitudes make the sum sensitive to the order of additions.
      auto x = RandomHalves(type, n, 14, -1.f, 1.f);
      const auto big = RandomHalves(type, n, 15, -300.f, 300.f);
      for (int64_t i = 0; i < n; i += 3) x[i] = big[i];
      std::vector<double> sums;
      for (Isa isa : testing::TestIsas()) {
        ScopedMaxIsa cap(isa);
        sums.push_back(SumSquaresHalf(type, x.data(), n));
      }
      for (size_t i = 1; i < sums.size(); ++i) {
        EXPECT_EQ(std::memcmp(&sums[i], &sums[0], sizeof(double)), 0)
            << Name(type) << " n=" << n << ": " << IsaName(testing::TestIsas()[i]) << " " << sums[i]
            << " vs " << sums[0];
      }
    }
  }
}

}  // namespace
}  // namespace dstrain::kernels
