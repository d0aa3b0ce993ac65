#include "kernels/matmul/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cast/cast.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"

namespace dstrain::kernels {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(gen() % 2001) / 1000.f - 1.f;
  return v;
}

// Tolerance for fp32 dot products of length K with |terms| <= 1: the float64 reference is exact
// to ~1e-16; a float32 GEMM accumulates rounding ~K · 2^-24 in the worst case, far less typically.
double Tol(int64_t K) { return 1e-6 * K + 1e-6; }

struct Shape {
  int64_t M, K, N;
};

class MatmulTest : public ::testing::TestWithParam<Shape> {};

// Under every ISA cap: with AVX-512 the forward runs oneDNN's matmul primitive (bias fused),
// below it dnnl_sgemm after FillBias; with and without a bias.
TEST_P(MatmulTest, ForwardMatchesFloat64Reference) {
  const auto [M, K, N] = GetParam();
  auto x = Random(M * K, 1), w = Random(N * K, 2), b = Random(N, 3);
  for (Isa isa : testing::TestIsas()) {
    ScopedMaxIsa cap(isa);
    for (const float* bias :
         {static_cast<const float*>(b.data()), static_cast<const float*>(nullptr)}) {
      std::vector<float> out(M * N, 123.f);
      MatmulForward(out.data(), x.data(), w.data(), bias, M, K, N);
      for (int64_t i = 0; i < M; ++i) {
        for (int64_t j = 0; j < N; ++j) {
          double ref = bias != nullptr ? b[j] : 0.0;
          for (int64_t k = 0; k < K; ++k) ref += double(x[i * K + k]) * w[j * K + k];
          ASSERT_NEAR(out[i * N + j], ref, Tol(K)) << IsaName(isa) << " " << i << "," << j;
        }
      }
    }
  }
}

TEST_P(MatmulTest, BackwardMatchesFloat64ReferenceAndAccumulates) {
  const auto [M, K, N] = GetParam();
  auto x = Random(M * K, 4), w = Random(N * K, 5), dout = Random(M * N, 6);
  std::vector<float> dx(M * K, 7.f), dw(N * K, 0.f), db(N, 0.f);
  // Two micro-steps: dweight and dbias accumulate, dinp is overwritten.
  for (int step = 0; step < 2; ++step) {
    MatmulBackward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), M, K, N);
  }
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t k = 0; k < K; ++k) {
      double ref = 0;
      for (int64_t j = 0; j < N; ++j) ref += double(dout[i * N + j]) * w[j * K + k];
      ASSERT_NEAR(dx[i * K + k], ref, Tol(N));
    }
  }
  for (int64_t j = 0; j < N; ++j) {
    double refb = 0;
    for (int64_t i = 0; i < M; ++i) refb += dout[i * N + j];
    ASSERT_NEAR(db[j], 2 * refb, 2 * Tol(M));
    for (int64_t k = 0; k < K; ++k) {
      double ref = 0;
      for (int64_t i = 0; i < M; ++i) ref += double(dout[i * N + j]) * x[i * K + k];
      ASSERT_NEAR(dw[j * K + k], 2 * ref, 2 * Tol(M));
    }
  }
  // accumulate_dinp adds onto what is there.
  std::vector<float> dx2 = dx;
  MatmulBackward(dx2.data(), nullptr, nullptr, dout.data(), x.data(), w.data(), M, K, N,
                 /*accumulate_dinp=*/true);
  for (int64_t i = 0; i < M * K; ++i) ASSERT_NEAR(dx2[i], 2 * dx[i], 2 * Tol(N));
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulTest,
                         ::testing::Values(Shape{1, 1, 1}, Shape{3, 5, 7}, Shape{17, 33, 65},
                                           Shape{64, 256, 96}, Shape{130, 70, 200}));

TEST(Sgemm, ZeroInnerDimensionScalesC) {
  std::vector<float> c = {1, 2, 3, 4};
  Sgemm(false, false, 2, 2, 0, 1.f, nullptr, 1, nullptr, 2, 0.5f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{0.5f, 1.f, 1.5f, 2.f}));
}

TEST(Sgemm, TransposedOperands) {
  // A stored (K, M) = (2, 3), B stored (N, K) = (2, 2).
  std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {1, 0, 0, 1}, c(6, 0.f);
  Sgemm(true, true, 3, 2, 2, 1.f, a.data(), 3, b.data(), 2, 0.f, c.data(), 2);
  // op(A) = [[1,4],[2,5],[3,6]], op(B) = identity.
  EXPECT_EQ(c, (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

// Transposed-A products whose row strides are multiples of 512 floats run in padded slices of the
// reduction dimension (matmul_cpu.cc, kAliasingStride): every combination of which operand
// aliases, op(B) transposed or not, a reduction length that leaves a partial slice, alpha and beta,
// against the float64 reference.
struct AliasCase {
  bool trans_b;
  int64_t lda, ldb;  // lda >= M, ldb >= N (or >= K with trans_b)
};

class SgemmAliasingStrideTest : public ::testing::TestWithParam<AliasCase> {};

TEST_P(SgemmAliasingStrideTest, MatchesFloat64Reference) {
  const AliasCase c = GetParam();
  const int64_t M = 500, N = 96, K = 300;  // M·N·K above the padded path's threshold
  const auto a = Random(K * c.lda, 11);    // A stored (K, M) at stride lda
  const auto b = Random((c.trans_b ? N : K) * c.ldb, 12);
  const auto c0 = Random(M * N, 13);
  const float alpha = 0.5f, beta = 0.25f;
  std::vector<float> got = c0;
  Sgemm(true, c.trans_b, M, N, K, alpha, a.data(), c.lda, b.data(), c.ldb, beta, got.data(), N);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double dot = 0;
      for (int64_t k = 0; k < K; ++k) {
        dot += double(a[k * c.lda + i]) * (c.trans_b ? b[j * c.ldb + k] : b[k * c.ldb + j]);
      }
      ASSERT_NEAR(got[i * N + j], alpha * dot + beta * c0[i * N + j], Tol(K)) << i << "," << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Strides, SgemmAliasingStrideTest,
                         ::testing::Values(AliasCase{false, 512, 96}, AliasCase{false, 1024, 512},
                                           AliasCase{false, 500, 512}, AliasCase{true, 512, 300},
                                           AliasCase{true, 1536, 512}));

// ---- bf16 ---------------------------------------------------------------------------------------
// The float64 references use the bf16-rounded operands, so the only error left is the fp32
// accumulation: products of two bf16 values are exact in fp32 (8-bit significands), and a sum of
// K exact terms in any order and grouping, then scaled by alpha and added to beta·C, rounds at
// most K + 2 times, each by at most 2^-24 relative. So, per element,
//   |got − want| <= (K + 2) · 2^-24 · (|alpha| · Σ_k |a_ik · b_kj| + |beta · c_ij|),
// with a 1% margin for the second-order terms of that bound.

double Bf16Bound(int64_t terms, double magnitude) {
  return 1.01 * static_cast<double>(terms + 2) * 0x1p-24 * magnitude;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  FloatToHalf(DType::kBF16, h.data(), x.data(), static_cast<int64_t>(x.size()));
  return h;
}

std::vector<double> Widen(const std::vector<uint16_t>& h) {
  std::vector<float> f(h.size());
  HalfToFloat(DType::kBF16, f.data(), h.data(), static_cast<int64_t>(h.size()));
  return {f.begin(), f.end()};
}

// Round fp32 values through bf16 and back.
std::vector<double> RoundedToBf16(const std::vector<float>& x) { return Widen(ToBf16(x)); }

struct GemmCase {
  bool trans_a, trans_b;
  int64_t M, N, K;
  float alpha, beta;
};

// C from GemmBf16 against the float64 reference; the padding past N in each row untouched.
void CheckGemm(const GemmCase& c, const std::vector<double>& a, int64_t lda,
               const std::vector<double>& b, int64_t ldb, const std::vector<float>& C0,
               const std::vector<float>& C, int64_t ldc) {
  const int64_t M = c.M, N = c.N, K = c.K;
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double dot = 0, magnitude = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double x = c.trans_a ? a[k * lda + i] : a[i * lda + k];
        const double y = c.trans_b ? b[j * ldb + k] : b[k * ldb + j];
        dot += x * y;
        magnitude += std::fabs(x * y);
      }
      const double c0 = c.beta == 0.f ? 0.0 : c.beta * static_cast<double>(C0[i * ldc + j]);
      const double want = c.alpha * dot + c0;
      const double tol = Bf16Bound(K, std::fabs(c.alpha) * magnitude + std::fabs(c0));
      ASSERT_LE(std::fabs(C[i * ldc + j] - want), tol)
          << "C[" << i << "," << j << "] = " << C[i * ldc + j] << ", want " << want;
    }
    for (int64_t j = N; j < ldc; ++j) {
      ASSERT_EQ(std::memcmp(&C[i * ldc + j], &C0[i * ldc + j], sizeof(float)), 0)
          << "wrote the padding at " << i << "," << j;
    }
  }
}

class GemmBf16Test : public ::testing::TestWithParam<GemmCase> {};

TEST_P(GemmBf16Test, MatchesFloat64ReferenceWithinAccumulationBound) {
  const GemmCase c = GetParam();
  const int64_t M = c.M, N = c.N, K = c.K;
  // Stored shapes, with row strides 3 larger than the rows (leading dimensions are honoured).
  const int64_t a_rows = c.trans_a ? K : M, a_cols = c.trans_a ? M : K;
  const int64_t b_rows = c.trans_b ? N : K, b_cols = c.trans_b ? K : N;
  const int64_t lda = a_cols + 3, ldb = b_cols + 3, ldc = N + 3;
  const auto a16 = ToBf16(testing::RandomFloats(a_rows * lda, 31));
  const auto b16 = ToBf16(testing::RandomFloats(b_rows * ldb, 32));
  const auto a = Widen(a16), b = Widen(b16);
  std::vector<float> C = testing::RandomFloats(M * ldc, 33);
  // beta == 0 must not read C: NaN there would show.
  if (c.beta == 0.f) {
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = NAN;
    }
  }
  const std::vector<float> C0 = C;
  for (Isa isa : testing::TestIsas()) {
    SCOPED_TRACE(IsaName(isa));
    ScopedMaxIsa cap(isa);  // below avx512: the widen-and-Sgemm path
    C = C0;
    GemmBf16(c.trans_a, c.trans_b, M, N, K, c.alpha, a16.data(), lda, b16.data(), ldb, c.beta,
             C.data(), ldc);
    ASSERT_NO_FATAL_FAILURE(CheckGemm(c, a, lda, b, ldb, C0, C, ldc));
  }
}

std::vector<GemmCase> GemmCases() {
  std::vector<GemmCase> cases;
  const int64_t shapes[][3] = {{1, 1, 1}, {3, 17, 65}, {17, 3, 1}, {65, 33, 17}, {130, 67, 257}};
  const float alpha_beta[][2] = {{1.f, 0.f}, {1.f, 1.f}, {-0.75f, 0.f}, {0.5f, 1.f}, {1.f, 0.5f}};
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (const auto& s : shapes) {
        for (const auto& ab : alpha_beta) cases.push_back({ta, tb, s[0], s[1], s[2], ab[0], ab[1]});
      }
    }
  }
  return cases;
}

std::string GemmCaseName(const ::testing::TestParamInfo<GemmCase>& info) {
  const GemmCase& c = info.param;
  std::string name = std::string(c.trans_a ? "T" : "N") + (c.trans_b ? "T" : "N");
  name += "_" + std::to_string(c.M) + "x" + std::to_string(c.N) + "x" + std::to_string(c.K);
  name += "_case" + std::to_string(info.index);
  return name;
}

INSTANTIATE_TEST_SUITE_P(Cases, GemmBf16Test, ::testing::ValuesIn(GemmCases()), GemmCaseName);

TEST(GemmBf16, EmptyProductScalesC) {
  std::vector<float> c = {1, 2, 3, 4};
  GemmBf16(false, false, 2, 2, 0, 1.f, nullptr, 1, nullptr, 2, 0.5f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{0.5f, 1.f, 1.5f, 2.f}));
  GemmBf16(false, false, 2, 2, 0, 1.f, nullptr, 1, nullptr, 2, 0.f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>(4, 0.f)));
}

TEST(GemmBf16, RepeatedShapesAndManyShapesGiveTheSameResults) {
  // The per-thread primitive cache: a reused primitive computes what a fresh one does, and a
  // caller cycling through more shapes than the cache holds still gets right results.
  const int64_t M = 9, N = 11, K = 13, kMaxRows = 80;
  const auto a16 = ToBf16(testing::RandomFloats(kMaxRows * K, 34));
  const auto b16 = ToBf16(testing::RandomFloats(K * N, 35));
  std::vector<float> first(M * N), again(M * N);
  GemmBf16(false, false, M, N, K, 1.f, a16.data(), K, b16.data(), N, 0.f, first.data(), N);
  for (int64_t rows = 1; rows <= kMaxRows; ++rows) {  // more shapes than the cache keeps
    std::vector<float> c(rows * N);
    GemmBf16(false, false, rows, N, K, 1.f, a16.data(), K, b16.data(), N, 0.f, c.data(), N);
  }
  GemmBf16(false, false, M, N, K, 1.f, a16.data(), K, b16.data(), N, 0.f, again.data(), N);
  EXPECT_TRUE(testing::BitwiseEqual(first, again));
}

// MatmulForwardBf16 against the float64 reference from the rounded operands.
void CheckForward(const Shape& shape) {
  const auto [M, K, N] = shape;
  const auto x = testing::RandomFloats(M * K, 41), w = testing::RandomFloats(N * K, 42);
  const auto b = testing::RandomFloats(N, 43);
  const auto xr = RoundedToBf16(x), wr = RoundedToBf16(w);
  for (bool with_bias : {true, false}) {
    std::vector<float> out(M * N, NAN);  // overwritten
    MatmulForwardBf16(out.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, M, K, N);
    double unrounded_worst = 0;  // how far the answer from fp32 operands is, in tolerances
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        double want = with_bias ? b[j] : 0.0, magnitude = std::fabs(want), exact = want;
        for (int64_t k = 0; k < K; ++k) {
          want += xr[i * K + k] * wr[j * K + k];
          magnitude += std::fabs(xr[i * K + k] * wr[j * K + k]);
          exact += double(x[i * K + k]) * w[j * K + k];
        }
        const double tol = Bf16Bound(K, magnitude);
        ASSERT_LE(std::fabs(out[i * N + j] - want), tol) << i << "," << j;
        unrounded_worst = std::max(unrounded_worst, std::fabs(exact - want) / tol);
      }
    }
    // The test can tell bf16 from fp32 operands: without the rounding some element would be
    // outside the bound (checked where K is large enough for rounding errors to add up).
    if (K >= 16) {
      EXPECT_GT(unrounded_worst, 1.0);
    }
  }
}

// MatmulBackwardBf16's three gradients over accumulating calls, and its null outputs.
void CheckBackward(const Shape& shape) {
  const auto [M, K, N] = shape;
  const auto x = testing::RandomFloats(M * K, 44), w = testing::RandomFloats(N * K, 45);
  const auto dout = testing::RandomFloats(M * N, 46);
  const auto xr = RoundedToBf16(x), wr = RoundedToBf16(w), doutr = RoundedToBf16(dout);
  // One step's products from the rounded operands, and the Σ|terms| of each.
  std::vector<double> dx_want(M * K, 0.0), dx_mag(M * K, 0.0);
  std::vector<double> dw_want(N * K, 0.0), dw_mag(N * K, 0.0), db_want(N, 0.0);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      db_want[j] += dout[i * N + j];
      for (int64_t k = 0; k < K; ++k) {
        dx_want[i * K + k] += doutr[i * N + j] * wr[j * K + k];
        dx_mag[i * K + k] += std::fabs(doutr[i * N + j] * wr[j * K + k]);
        dw_want[j * K + k] += doutr[i * N + j] * xr[i * K + k];
        dw_mag[j * K + k] += std::fabs(doutr[i * N + j] * xr[i * K + k]);
      }
    }
  }
  // Step s + 1 of an accumulation adds to a value of size up to s·Σ|terms|, so after s steps the
  // bound on the error is (1 + 2 + ... + s) times one step's: 1, 3, 6.
  std::vector<float> dx(M * K, 7.f), dw(N * K, 0.f), db(N, 0.f);
  // Two micro-steps: dweight and dbias accumulate, dinp is overwritten.
  for (int step = 0; step < 2; ++step) {
    MatmulBackwardBf16(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), M, K, N);
  }
  for (int64_t i = 0; i < M * K; ++i) {
    ASSERT_LE(std::fabs(dx[i] - dx_want[i]), Bf16Bound(N, dx_mag[i])) << "dinp " << i;
  }
  for (int64_t i = 0; i < N * K; ++i) {
    ASSERT_LE(std::fabs(dw[i] - 2 * dw_want[i]), 3 * Bf16Bound(M, dw_mag[i])) << "dweight " << i;
  }
  // dbias sums the fp32 gradient, as MatmulBackward does (Tol above), to the bit: the sums made
  // in the pass that rounds dout are MatmulBackward's column sums.
  for (int64_t j = 0; j < N; ++j) ASSERT_NEAR(db[j], 2 * db_want[j], 2 * Tol(M)) << j;
  std::vector<float> db32(N, 0.f);
  for (int step = 0; step < 2; ++step) {
    MatmulBackward(nullptr, nullptr, db32.data(), dout.data(), x.data(), w.data(), M, K, N);
  }
  EXPECT_EQ(db, db32);

  // accumulate_dinp adds onto what is there.
  MatmulBackwardBf16(dx.data(), nullptr, nullptr, dout.data(), x.data(), w.data(), M, K, N,
                     /*accumulate_dinp=*/true);
  for (int64_t i = 0; i < M * K; ++i) {
    ASSERT_LE(std::fabs(dx[i] - 2 * dx_want[i]), 3 * Bf16Bound(N, dx_mag[i])) << "dinp " << i;
  }
  // Null dinp and dbias are skipped; dweight still accumulates.
  const std::vector<float> db_before = db;
  MatmulBackwardBf16(nullptr, dw.data(), nullptr, dout.data(), x.data(), w.data(), M, K, N);
  EXPECT_EQ(db, db_before);
  for (int64_t i = 0; i < N * K; ++i) {
    ASSERT_LE(std::fabs(dw[i] - 3 * dw_want[i]), 6 * Bf16Bound(M, dw_mag[i])) << "dweight " << i;
  }
}

TEST(MatmulForwardBf16, EmptyInnerDimensionGivesTheBiasOrZeros) {
  const float bias[] = {1.5f, -2.f, 3.f};
  std::vector<float> out(6, NAN);
  const float* no_inp = nullptr;
  const float* no_weight = nullptr;
  MatmulForwardBf16(out.data(), no_inp, no_weight, bias, 2, 0, 3);
  EXPECT_EQ(out, (std::vector<float>{1.5f, -2.f, 3.f, 1.5f, -2.f, 3.f}));
  MatmulForwardBf16(out.data(), no_inp, no_weight, nullptr, 2, 0, 3);
  EXPECT_EQ(out, (std::vector<float>(6, 0.f)));
}

// With the weight given in bf16 (parameters stored in bf16) the results are bitwise those of the
// fp32-weight versions on the same values: only the rounding pass over the weight is skipped.
TEST(MatmulBf16, Bf16WeightsGiveTheSameBits) {
  const int64_t M = 37, K = 65, N = 23;
  const auto x = testing::RandomFloats(M * K, 51), b = testing::RandomFloats(N, 53);
  const auto dout = testing::RandomFloats(M * N, 54);
  const std::vector<uint16_t> w16 = ToBf16(testing::RandomFloats(N * K, 52));
  std::vector<float> w(N * K);
  HalfToFloat(DType::kBF16, w.data(), w16.data(), N * K);
  std::vector<float> out_a(M * N), out_b(M * N);
  MatmulForwardBf16(out_a.data(), x.data(), w.data(), b.data(), M, K, N);
  MatmulForwardBf16(out_b.data(), x.data(), w16.data(), b.data(), M, K, N);
  EXPECT_EQ(out_a, out_b);
  std::vector<float> dx_a(M * K), dx_b(M * K), dw_a(N * K, 0.5f), dw_b(N * K, 0.5f), db_a(N),
      db_b(N);
  MatmulBackwardBf16(dx_a.data(), dw_a.data(), db_a.data(), dout.data(), x.data(), w.data(), M, K,
                     N);
  MatmulBackwardBf16(dx_b.data(), dw_b.data(), db_b.data(), dout.data(), x.data(), w16.data(), M, K,
                     N);
  EXPECT_EQ(dx_a, dx_b);
  EXPECT_EQ(dw_a, dw_b);
  EXPECT_EQ(db_a, db_b);
  // Overwriting dweight gives what accumulating into zeros gives, whatever dweight held.
  std::vector<float> dw_zero(N * K, 0.f), dw_junk(N * K, NAN);
  MatmulBackwardBf16(nullptr, dw_zero.data(), nullptr, dout.data(), x.data(), w16.data(), M, K, N);
  MatmulBackwardBf16(nullptr, dw_junk.data(), nullptr, dout.data(), x.data(), w16.data(), M, K, N,
                     /*accumulate_dinp=*/false, /*accumulate_dweight=*/false);
  EXPECT_EQ(dw_junk, dw_zero);
  // Likewise with the weight in fp32, in bf16 products and in fp32 ones.
  std::vector<float> dw_zero32(N * K, 0.f), dw_junk32(N * K, NAN);
  std::fill(dw_junk.begin(), dw_junk.end(), NAN);
  MatmulBackwardBf16(nullptr, dw_junk.data(), nullptr, dout.data(), x.data(), w.data(), M, K, N,
                     /*accumulate_dinp=*/false, /*accumulate_dweight=*/false);
  EXPECT_EQ(dw_junk, dw_zero);
  MatmulBackward(nullptr, dw_zero32.data(), nullptr, dout.data(), x.data(), w.data(), M, K, N);
  MatmulBackward(nullptr, dw_junk32.data(), nullptr, dout.data(), x.data(), w.data(), M, K, N,
                 /*accumulate_dinp=*/false, /*accumulate_dweight=*/false);
  EXPECT_EQ(dw_junk32, dw_zero32);
}

// With the input given in bf16 (activations stored rounded) the results are bitwise those of
// passing its fp32 values, for either weight form, on every ISA (the oneDNN bf16 route where the
// CPU has it, the fp32 route below it), accumulating or overwriting.
TEST(MatmulBf16, Bf16InputsGiveTheSameBits) {
  for (Isa isa : testing::TestIsas()) {
    SCOPED_TRACE(IsaName(isa));
    ScopedMaxIsa cap(isa);
    const int64_t M = 41, K = 67, N = 29;
    const std::vector<uint16_t> x16 = ToBf16(testing::RandomFloats(M * K, 71));
    std::vector<float> x(M * K);
    HalfToFloat(DType::kBF16, x.data(), x16.data(), M * K);
    const auto w = testing::RandomFloats(N * K, 72), b = testing::RandomFloats(N, 73);
    const auto dout = testing::RandomFloats(M * N, 74);
    const std::vector<uint16_t> w16 = ToBf16(w);
    for (bool weight_bf16 : {false, true}) {
      SCOPED_TRACE(weight_bf16 ? "bf16 weight" : "fp32 weight");
      std::vector<float> out_a(M * N), out_b(M * N, NAN);
      std::vector<float> dx_a(M * K, 0.25f), dx_b(M * K, 0.25f), dw_a(N * K, 0.5f),
          dw_b(N * K, 0.5f), db_a(N, 1.f), db_b(N, 1.f);
      if (weight_bf16) {
        MatmulForwardBf16(out_a.data(), x.data(), w16.data(), b.data(), M, K, N);
        MatmulForwardBf16(out_b.data(), x16.data(), w16.data(), b.data(), M, K, N);
        MatmulBackwardBf16(dx_a.data(), dw_a.data(), db_a.data(), dout.data(), x.data(), w16.data(),
                           M, K, N, /*accumulate_dinp=*/true);
        MatmulBackwardBf16(dx_b.data(), dw_b.data(), db_b.data(), dout.data(), x16.data(),
                           w16.data(), M, K, N, /*accumulate_dinp=*/true);
      } else {
        MatmulForwardBf16(out_a.data(), x.data(), w.data(), b.data(), M, K, N);
        MatmulForwardBf16(out_b.data(), x16.data(), w.data(), b.data(), M, K, N);
        MatmulBackwardBf16(dx_a.data(), dw_a.data(), db_a.data(), dout.data(), x.data(), w.data(),
                           M, K, N, /*accumulate_dinp=*/true);
        MatmulBackwardBf16(dx_b.data(), dw_b.data(), db_b.data(), dout.data(), x16.data(), w.data(),
                           M, K, N, /*accumulate_dinp=*/true);
      }
      EXPECT_EQ(out_a, out_b);
      EXPECT_EQ(dx_a, dx_b);
      EXPECT_EQ(dw_a, dw_b);
      EXPECT_EQ(db_a, db_b);
      // A fresh dweight alone (no dinp): overwritten, whatever it held.
      std::vector<float> dw_c(N * K, NAN), dw_d(N * K, NAN);
      if (weight_bf16) {
        MatmulBackwardBf16(nullptr, dw_c.data(), nullptr, dout.data(), x.data(), w16.data(), M, K,
                           N, false, /*accumulate_dweight=*/false);
        MatmulBackwardBf16(nullptr, dw_d.data(), nullptr, dout.data(), x16.data(), w16.data(), M, K,
                           N, false, /*accumulate_dweight=*/false);
      } else {
        MatmulBackwardBf16(nullptr, dw_c.data(), nullptr, dout.data(), x.data(), w.data(), M, K, N,
                           false, /*accumulate_dweight=*/false);
        MatmulBackwardBf16(nullptr, dw_d.data(), nullptr, dout.data(), x16.data(), w.data(), M, K,
                           N, false, /*accumulate_dweight=*/false);
      }
      EXPECT_EQ(dw_c, dw_d);
    }
  }
}

// Below AVX-512 the Matmul*Bf16 functions multiply the rounded operands' fp32 values directly
// (RoundToHalf) instead of going through GemmBf16: they must give GemmBf16's bits on the
// operands rounded to bf16 storage, and the fill-then-accumulate bias, on every shape class
// (including a transposed-A product at an aliasing stride, which Sgemm slices).
TEST(MatmulBf16, WithoutOneDnnBf16TheFp32RouteGivesGemmBf16sBits) {
  ScopedMaxIsa cap(Isa::kAvx2);
  for (const Shape& shape : {Shape{3, 5, 7}, Shape{64, 256, 96}, Shape{256, 64, 1024}}) {
    const int64_t M = shape.M, K = shape.K, N = shape.N;
    SCOPED_TRACE(std::to_string(M) + "x" + std::to_string(K) + "x" + std::to_string(N));
    const auto x = testing::RandomFloats(M * K, 61), w = testing::RandomFloats(N * K, 62);
    const auto b = testing::RandomFloats(N, 63), dout = testing::RandomFloats(M * N, 64);
    const auto x16 = ToBf16(x), w16 = ToBf16(w), dout16 = ToBf16(dout);

    std::vector<float> want(M * N);
    for (int64_t i = 0; i < M; ++i) std::copy(b.begin(), b.end(), want.begin() + i * N);
    GemmBf16(false, true, M, N, K, 1.f, x16.data(), K, w16.data(), K, 1.f, want.data(), N);
    std::vector<float> got(M * N, NAN), got16(M * N, NAN);
    MatmulForwardBf16(got.data(), x.data(), w.data(), b.data(), M, K, N);
    MatmulForwardBf16(got16.data(), x.data(), w16.data(), b.data(), M, K, N);
    EXPECT_EQ(got, want);
    EXPECT_EQ(got16, want);

    std::vector<float> dx_want(M * K, 0.25f), dw_want(N * K, 0.5f);
    GemmBf16(false, false, M, K, N, 1.f, dout16.data(), N, w16.data(), K, 1.f, dx_want.data(), K);
    GemmBf16(true, false, N, K, M, 1.f, dout16.data(), N, x16.data(), K, 1.f, dw_want.data(), K);
    std::vector<float> dx(M * K, 0.25f), dw(N * K, 0.5f), dx16(M * K, 0.25f), dw16(N * K, 0.5f);
    MatmulBackwardBf16(dx.data(), dw.data(), nullptr, dout.data(), x.data(), w.data(), M, K, N,
                       /*accumulate_dinp=*/true);
    // With a bias gradient dout is rounded in the pass that sums it: the same products.
    std::vector<float> db16(N, 0.75f), db_want(N, 0.75f);
    MatmulBackwardBf16(dx16.data(), dw16.data(), db16.data(), dout.data(), x.data(), w16.data(), M,
                       K, N, /*accumulate_dinp=*/true);
    MatmulBackward(nullptr, nullptr, db_want.data(), dout.data(), x.data(), w.data(), M, K, N);
    EXPECT_EQ(dx, dx_want);
    EXPECT_EQ(dw, dw_want);
    EXPECT_EQ(dx16, dx_want);
    EXPECT_EQ(dw16, dw_want);
    EXPECT_EQ(db16, db_want);
  }
}

class MatmulBf16Test : public ::testing::TestWithParam<Shape> {};

TEST_P(MatmulBf16Test, ForwardRoundsOperandsAndAddsBias) {
  for (Isa isa : testing::TestIsas()) {
    SCOPED_TRACE(IsaName(isa));
    ScopedMaxIsa cap(isa);  // below avx512: the widen-and-Sgemm path
    ASSERT_NO_FATAL_FAILURE(CheckForward(GetParam()));
  }
}

TEST_P(MatmulBf16Test, BackwardAccumulatesAndSkipsNullOutputs) {
  for (Isa isa : testing::TestIsas()) {
    SCOPED_TRACE(IsaName(isa));
    ScopedMaxIsa cap(isa);
    ASSERT_NO_FATAL_FAILURE(CheckBackward(GetParam()));
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulBf16Test,
                         ::testing::Values(Shape{1, 1, 1}, Shape{3, 5, 7}, Shape{17, 33, 65},
                                           Shape{64, 256, 96}, Shape{130, 70, 200}));

}  // namespace
}  // namespace dstrain::kernels
