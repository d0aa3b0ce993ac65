#include "kernels/matmul/matmul.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

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

TEST_P(MatmulTest, ForwardMatchesFloat64Reference) {
  const auto [M, K, N] = GetParam();
  auto x = Random(M * K, 1), w = Random(N * K, 2), b = Random(N, 3);
  std::vector<float> out(M * N, 123.f);
  MatmulForward(out.data(), x.data(), w.data(), b.data(), M, K, N);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double ref = b[j];
      for (int64_t k = 0; k < K; ++k) ref += double(x[i * K + k]) * w[j * K + k];
      ASSERT_NEAR(out[i * N + j], ref, Tol(K)) << i << "," << j;
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

}  // namespace
}  // namespace dstrain::kernels
