#include "kernels/attention/attention_bf16.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/attention_reference.h"
#include "kernels/attention/attention_test_shapes.h"
#include "kernels/attention/bf16_tiles.h"
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

// T = 1, T and hs below, at and across the 32-row block (odd sizes included), several blocks,
// and the benchmark's head layout (T 256, hs 64).
const Shape kShapes[] = {{1, 1, 4, 1},   {2, 5, 12, 3},  {1, 33, 33, 1},  {2, 17, 48, 2},
                         {1, 64, 64, 1}, {2, 70, 96, 3}, {1, 100, 80, 5}, {1, 256, 256, 4}};

std::string Name(const Shape& s) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " C=" + std::to_string(s.C) +
         " NH=" + std::to_string(s.NH);
}

float Bf16ToFloat(uint16_t h) {
  const uint32_t bits = uint32_t{h} << 16;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

std::vector<float> Widen(const std::vector<uint16_t>& h) {
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = Bf16ToFloat(h[i]);
  return f;
}

struct Result {
  std::vector<uint16_t> out;
  std::vector<float> stats, dqkv;
};

Result RunBoth(const Shape& s, const std::vector<float>& qkv, const std::vector<float>& dout,
               TileRoute route) {
  Result r{std::vector<uint16_t>(OutSize(s) + 1, 0xabcd), std::vector<float>(StatsSize(s)),
           std::vector<float>(QkvSize(s), 55.f)};  // dqkv: garbage that must be overwritten
  AttentionForwardBf16(r.out.data(), r.stats.data(), qkv.data(), s.B, s.T, s.C, s.NH, route);
  EXPECT_EQ(r.out.back(), 0xabcd) << "past the end";
  r.out.pop_back();
  // All bits set: NaN read as f32 and as either bf16 half, so a read of unwritten scratch shows.
  std::vector<float> scratch(AttentionBackwardBf16ScratchFloats(s.B, s.T, s.C, s.NH));
  std::memset(scratch.data(), 0xff, scratch.size() * sizeof(float));
  AttentionBackwardBf16(r.dqkv.data(), scratch.data(), dout.data(), qkv.data(), r.stats.data(), s.B,
                        s.T, s.C, s.NH, route);
  return r;
}

// The routes a test covers on this machine: the portable one always, AMX where usable.
std::vector<TileRoute> Routes() {
  std::vector<TileRoute> routes{TileRoute::kPortable};
  if (AmxUsable()) routes.push_back(TileRoute::kAmx);
  return routes;
}

// Every ISA with the portable route, and AVX-512 (the only cap under which AMX is usable) with
// AMX where this machine has it.
std::vector<std::tuple<Isa, TileRoute>> IsasAndRoutes() {
  std::vector<std::tuple<Isa, TileRoute>> params;
  for (Isa isa : testing::TestIsas()) {
    params.emplace_back(isa, TileRoute::kPortable);
    if (isa == Isa::kAvx512 && AmxUsable()) params.emplace_back(isa, TileRoute::kAmx);
  }
  return params;
}

class AttentionBf16Test : public ::testing::TestWithParam<std::tuple<Isa, TileRoute>> {
 protected:
  TileRoute route() const { return std::get<1>(GetParam()); }
  ScopedMaxIsa isa_{std::get<0>(GetParam())};
};

// Against the float64 model of the same rounding points. What remains is f32 accumulation
// (~1e-7 relative), P or dS landing on the other side of a bf16 rounding boundary when its f32
// value differs from the f64 one in the last bits (one bf16 step, 2^-8 relative, in a few
// entries), and out's own rounding to bf16 (2^-9 relative). The worst errors measured here (Xeon
// with AMX, every ISA and route) used 32% of out's tolerance, 42% of dqkv's and 41% of the
// stats'; a misplaced block or row is off by O(0.1).
TEST_P(AttentionBf16Test, MatchesTheFloat64ModelOfItsRounding) {
  for (const Shape& s : kShapes) {
    const auto qkv = RandomFloats(QkvSize(s), 1), dout = RandomFloats(OutSize(s), 2);
    const Result got = RunBoth(s, qkv, dout, route());
    std::vector<double> out(OutSize(s)), stats(StatsSize(s)), dqkv(QkvSize(s));
    AttentionBf16ProductsReference(out.data(), stats.data(), dqkv.data(), ToDouble(qkv).data(),
                                   ToDouble(dout).data(), s.B, s.T, s.C, s.NH);
    EXPECT_TRUE(AllClose(Widen(got.out), out, 2e-3, 8e-3)) << Name(s);
    EXPECT_TRUE(AllClose(got.stats, stats, 1e-7, 2e-7)) << Name(s);
    EXPECT_TRUE(AllClose(got.dqkv, dqkv, 2e-4, 2e-3)) << Name(s);
  }
}

// And close to exact attention (attention.h's f64 reference, nothing rounded): bf16 operands
// keep about 3 significant digits.
TEST_P(AttentionBf16Test, StaysCloseToUnroundedAttention) {
  for (const Shape& s : kShapes) {
    const auto qkv = RandomFloats(QkvSize(s), 3), dout = RandomFloats(OutSize(s), 4);
    const Result got = RunBoth(s, qkv, dout, route());
    const auto qkvd = ToDouble(qkv);
    std::vector<double> out(OutSize(s)), att(AttSize(s)), dqkv(QkvSize(s));
    AttentionForwardReference(out.data(), att.data(), qkvd.data(), s.B, s.T, s.C, s.NH);
    AttentionBackwardReference(dqkv.data(), ToDouble(dout).data(), qkvd.data(), att.data(), s.B,
                               s.T, s.C, s.NH);
    EXPECT_TRUE(AllClose(Widen(got.out), out, 1e-2, 2e-2)) << Name(s);
    EXPECT_TRUE(AllClose(got.dqkv, dqkv, 1e-2, 3e-2)) << Name(s);
  }
}

// The backward pass recomputes the forward's bf16 probabilities bitwise. With V the identity
// (V[t][t] = 1, T <= hs), out[i][j] = Σ_k P[i][k] V[k][j] is exactly P[i][j] (a bf16 value, so
// out's rounding keeps it); with dO[i][d] = 1 for d = i, dV[j][d] = Σ_i P[i][j] dO[i][d] is
// exactly the backward's P[d][j].
TEST_P(AttentionBf16Test, BackwardRecomputesTheForwardProbabilitiesBitwise) {
  for (const Shape& s : {Shape{1, 30, 64, 2}, Shape{2, 7, 16, 2}, Shape{1, 33, 99, 3}}) {
    const int hs = s.C / s.NH;
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
    const Result got = RunBoth(s, qkv, dout, route());
    for (int b = 0; b < s.B; ++b) {
      for (int h = 0; h < s.NH; ++h) {
        for (int i = 0; i < s.T; ++i) {
          for (int j = 0; j <= i; ++j) {
            const float forward = Bf16ToFloat(got.out[(int64_t{b} * s.T + i) * s.C + h * hs + j]);
            const float recomputed =
                got.dqkv[(int64_t{b} * s.T + j) * 3 * s.C + 2 * s.C + h * hs + i];
            ASSERT_GT(forward, 0.f);
            ASSERT_EQ(recomputed, forward) << Name(s) << " P[" << i << "][" << j << "]";
          }
        }
      }
    }
  }
}

// The f32 out is O before its last rounding: rounded, it is the bf16 out bit for bit.
TEST_P(AttentionBf16Test, Fp32OutRoundsToTheBf16Out) {
  for (const Shape& s : kShapes) {
    const auto qkv = RandomFloats(QkvSize(s), 10);
    std::vector<uint16_t> out16(OutSize(s));
    std::vector<float> out32(OutSize(s) + 1, 7.f), stats16(StatsSize(s)), stats32(StatsSize(s));
    AttentionForwardBf16(out16.data(), stats16.data(), qkv.data(), s.B, s.T, s.C, s.NH, route());
    AttentionForwardBf16(out32.data(), stats32.data(), qkv.data(), s.B, s.T, s.C, s.NH, route());
    EXPECT_EQ(out32.back(), 7.f) << "past the end";
    out32.pop_back();
    std::vector<uint16_t> rounded(OutSize(s));
    FloatToHalf(DType::kBF16, rounded.data(), out32.data(), OutSize(s));
    EXPECT_EQ(rounded, out16) << Name(s);
    EXPECT_TRUE(BitwiseEqual(stats32, stats16)) << Name(s);
  }
}

TEST_P(AttentionBf16Test, BitwiseIdenticalAcrossThreadCounts) {
  const Shape s{4, 90, 96, 3};
  const auto qkv = RandomFloats(QkvSize(s), 5), dout = RandomFloats(OutSize(s), 6);
  Result first;
  for (int threads : {1, 2, 3}) {
    testing::ScopedThreads scoped(threads);
    Result r = RunBoth(s, qkv, dout, route());
    if (threads == 1) {
      first = std::move(r);
      continue;
    }
    EXPECT_EQ(r.out, first.out) << threads;
    EXPECT_TRUE(BitwiseEqual(r.stats, first.stats)) << threads;
    EXPECT_TRUE(BitwiseEqual(r.dqkv, first.dqkv)) << threads;
  }
}

TEST_P(AttentionBf16Test, ZeroSizesAreNoOps) {
  EXPECT_EQ(AttentionBackwardBf16ScratchFloats(0, 8, 16, 2), 0);
  EXPECT_EQ(AttentionBackwardBf16ScratchFloats(2, 0, 16, 2), 0);
  AttentionForwardBf16(static_cast<uint16_t*>(nullptr), nullptr, nullptr, 0, 8, 16, 2, route());
  AttentionForwardBf16(static_cast<float*>(nullptr), nullptr, nullptr, 2, 0, 16, 2, route());
  AttentionBackwardBf16(nullptr, nullptr, nullptr, nullptr, nullptr, 2, 0, 16, 2, route());
}

std::string ParamName(const ::testing::TestParamInfo<std::tuple<Isa, TileRoute>>& info) {
  return std::string(IsaName(std::get<0>(info.param))) +
         (std::get<1>(info.param) == TileRoute::kAmx ? "_amx" : "_portable");
}

INSTANTIATE_TEST_SUITE_P(IsasAndRoutes, AttentionBf16Test, ::testing::ValuesIn(IsasAndRoutes()),
                         ParamName);

// Where AMX is usable, the tiles add the same products in the same order as the portable route:
// the same bits (the inputs here have no subnormals, which AMX would flush).
TEST(AttentionBf16AmxTest, AmxGivesThePortableRoutesBits) {
  if (!AmxUsable()) GTEST_SKIP() << "this machine has no usable AMX";
  for (const Shape& s : kShapes) {
    const auto qkv = RandomFloats(QkvSize(s), 7), dout = RandomFloats(OutSize(s), 8);
    const Result amx = RunBoth(s, qkv, dout, TileRoute::kAmx);
    const Result portable = RunBoth(s, qkv, dout, TileRoute::kPortable);
    EXPECT_EQ(amx.out, portable.out) << Name(s);
    EXPECT_TRUE(BitwiseEqual(amx.stats, portable.stats)) << Name(s);
    EXPECT_TRUE(BitwiseEqual(amx.dqkv, portable.dqkv)) << Name(s);
  }
}

// The tile product itself, on integers small enough that every sum is exact: C = A B (+ C) for
// both routes, with leading dimensions wider than the operands.
TEST(TileProductBf16Test, ComputesTheProductInEveryLayout) {
  const int m = 64, n = 96, k = 64, lda = k + 32, ldb = 2 * n + 64, ldc = n + 16;
  std::mt19937 gen(11);
  std::vector<uint16_t> a(int64_t{m} * lda), b(int64_t{k / 2} * ldb);
  std::vector<double> av(a.size()), bv(int64_t{k} * n);
  auto small = [&](double* value) {
    const int x = static_cast<int>(gen() % 15) - 7;
    *value = x;
    const float f = static_cast<float>(x);
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    return static_cast<uint16_t>(bits >> 16);  // exact in bf16
  };
  for (int i = 0; i < m; ++i) {
    for (int kk = 0; kk < k; ++kk) a[i * lda + kk] = small(&av[i * lda + kk]);
  }
  for (int kk = 0; kk < k; ++kk) {
    for (int j = 0; j < n; ++j) b[(kk / 2) * ldb + 2 * j + kk % 2] = small(&bv[kk * n + j]);
  }
  for (TileRoute route : Routes()) {
    for (bool accumulate : {false, true}) {
      std::vector<float> c(int64_t{m} * ldc, 3.f);
      TileScope tiles(route);
      TileProductBf16(route, c.data(), ldc, a.data(), lda, b.data(), ldb, m, n, k, accumulate);
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < n; ++j) {
          double want = accumulate ? 3.0 : 0.0;
          for (int kk = 0; kk < k; ++kk) want += av[i * lda + kk] * bv[kk * n + j];
          ASSERT_EQ(c[i * ldc + j], want) << i << " " << j << " amx " << (route == TileRoute::kAmx);
        }
        for (int j = n; j < ldc; ++j) ASSERT_EQ(c[i * ldc + j], 3.f) << "past n";
      }
    }
  }
}

// The layout helpers under every ISA cap, on shapes with and without whole 16-word blocks.
TEST(LayoutTest, TransposeWordsAndInterleaveRowPairsMoveEveryElement) {
  std::mt19937 gen(5);
  for (Isa isa : testing::TestIsas()) {
    ScopedMaxIsa cap(isa);
    for (auto [rows, cols] : {std::pair{16, 16}, {32, 48}, {7, 5}, {37, 70}, {64, 256}}) {
      const int lds = cols + 3, ldd = rows + 5;
      std::vector<uint32_t> src(int64_t{rows} * lds), dst(int64_t{cols} * ldd, 0xdeadbeef);
      for (auto& x : src) x = gen();
      TransposeWords(dst.data(), ldd, src.data(), lds, rows, cols);
      for (int r = 0; r < rows; ++r) {
        for (int c = 0; c < cols; ++c) {
          ASSERT_EQ(dst[c * ldd + r], src[r * lds + c]) << IsaName(isa) << " " << r << " " << c;
        }
      }
      for (int c = 0; c < cols; ++c) {
        for (int r = rows; r < ldd; ++r) ASSERT_EQ(dst[c * ldd + r], 0xdeadbeef) << "past rows";
      }
    }
    for (auto [rows, cols] : {std::pair{2, 32}, {32, 96}, {64, 256}}) {
      const int lds = cols + 32, ldd = 2 * cols + 64;
      std::vector<uint16_t> src(int64_t{rows} * lds), dst(int64_t{rows / 2} * ldd, 0xbeef);
      for (auto& x : src) x = static_cast<uint16_t>(gen());
      InterleaveRowPairs(dst.data(), ldd, src.data(), lds, rows, cols);
      for (int r = 0; r < rows; ++r) {
        for (int j = 0; j < cols; ++j) {
          ASSERT_EQ(dst[(r / 2) * ldd + 2 * j + r % 2], src[r * lds + j]) << IsaName(isa);
        }
      }
      for (int p = 0; p < rows / 2; ++p) {
        for (int x = 2 * cols; x < ldd; ++x) ASSERT_EQ(dst[p * ldd + x], 0xbeef) << "past cols";
      }
    }
  }
}

// On values whose sums round: the portable route adds, per 32 k, the even products and the odd
// products apart and then their sum (bf16_tiles.h), checked here against that order written out
// again; where AMX runs, the tiles give the same bits (the inputs have no subnormals).
TEST(TileProductBf16Test, AddsInTheDocumentedOrder) {
  const int m = 32, n = 64, k = 96, lda = k, ldb = 2 * n;
  std::mt19937 gen(12);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  auto bf16 = [&] {
    const float f = uniform(gen);
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    return static_cast<uint16_t>(bits >> 16);  // truncated: any bf16 value will do
  };
  std::vector<uint16_t> a(int64_t{m} * lda), b(int64_t{k / 2} * ldb);
  for (auto& x : a) x = bf16();
  for (auto& x : b) x = bf16();
  std::vector<float> c0(int64_t{m} * n), want(c0.size());
  for (auto& x : c0) x = uniform(gen);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      float acc = c0[i * n + j];
      for (int k0 = 0; k0 < k; k0 += 32) {
        float even = 0.f, odd = 0.f;
        for (int p = k0 / 2; p < k0 / 2 + 16; ++p) {
          even += Bf16ToFloat(a[i * lda + 2 * p]) * Bf16ToFloat(b[p * ldb + 2 * j]);
          odd += Bf16ToFloat(a[i * lda + 2 * p + 1]) * Bf16ToFloat(b[p * ldb + 2 * j + 1]);
        }
        acc += even + odd;
      }
      want[i * n + j] = acc;
    }
  }
  for (TileRoute route : Routes()) {
    std::vector<float> c = c0;
    TileScope tiles(route);
    TileProductBf16(route, c.data(), n, a.data(), lda, b.data(), ldb, m, n, k, true);
    EXPECT_TRUE(BitwiseEqual(c, want)) << "amx " << (route == TileRoute::kAmx);
  }
}

TEST(RoundToBf16Test, RoundsToNearestEven) {
  EXPECT_EQ(RoundToBf16(1.0), 1.0);
  EXPECT_EQ(RoundToBf16(1.0 + 1.0 / 256), 1.0);              // a tie: to even
  EXPECT_EQ(RoundToBf16(1.0 + 3.0 / 256), 1.0 + 4.0 / 256);  // a tie: to even (up)
  EXPECT_EQ(RoundToBf16(1.0 + 1.1 / 256), 1.0 + 2.0 / 256);
  EXPECT_EQ(RoundToBf16(-3.0e-3), -0.0030059814453125);
  EXPECT_EQ(RoundToBf16(0.0), 0.0);
}

}  // namespace
}  // namespace dstrain::kernels
