// The cuBLAS linear layer and GemmRowMajor on the GPU (and on the CPU simulator, whose cuBLAS is
// a naive loop with cuBLAS's argument checks) vs float64 references.
#include "kernels/matmul/cuda/matmul_cuda.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/test_util.h"

namespace dstrain::kernels::gpu {
namespace {

using testing::AllClose;
using testing::DeviceBuffer;
using testing::RandomFloats;

struct Shape {
  int64_t M, K, N;
};

// Ones, odd sizes off every tile multiple, and a K long enough to matter for rounding.
const Shape kShapes[] = {{1, 1, 1}, {3, 5, 7}, {33, 65, 31}, {64, 128, 96}, {70, 300, 45}};

// fp32: a length-K dot product of terms <= 1 rounds by far less than K·2^-24 (the CPU test's
// bound, matmul_test.cc).
double Tol(int64_t K) { return 1e-6 * K + 1e-6; }

std::unique_ptr<CublasContext> Context(CublasContext::Options options = {}) {
  auto ctx = CublasContext::Create(nullptr, options);
  EXPECT_TRUE(ctx.ok()) << ctx.status();
  return ctx.ok() ? std::move(ctx).value() : nullptr;
}

// Float64 references of the row-major products.
std::vector<double> Forward(const std::vector<float>& x, const std::vector<float>& w,
                            const std::vector<float>* b, const Shape& s) {
  std::vector<double> out(s.M * s.N);
  for (int64_t i = 0; i < s.M; ++i) {
    for (int64_t j = 0; j < s.N; ++j) {
      double acc = b ? (*b)[j] : 0.0;
      for (int64_t k = 0; k < s.K; ++k) acc += double(x[i * s.K + k]) * w[j * s.K + k];
      out[i * s.N + j] = acc;
    }
  }
  return out;
}

void BackwardAccumulate(std::vector<double>& dx, std::vector<double>& dw, std::vector<double>& db,
                        const std::vector<float>& dy, const std::vector<float>& x,
                        const std::vector<float>& w, const Shape& s, bool accumulate_dx) {
  for (int64_t i = 0; i < s.M; ++i) {
    for (int64_t k = 0; k < s.K; ++k) {
      double acc = 0;
      for (int64_t j = 0; j < s.N; ++j) acc += double(dy[i * s.N + j]) * w[j * s.K + k];
      dx[i * s.K + k] = (accumulate_dx ? dx[i * s.K + k] : 0.0) + acc;
    }
  }
  for (int64_t j = 0; j < s.N; ++j) {
    for (int64_t k = 0; k < s.K; ++k) {
      double acc = 0;
      for (int64_t i = 0; i < s.M; ++i) acc += double(dy[i * s.N + j]) * x[i * s.K + k];
      dw[j * s.K + k] += acc;
    }
    for (int64_t i = 0; i < s.M; ++i) db[j] += dy[i * s.N + j];
  }
}

TEST(MatmulCudaTest, ForwardMatchesReferenceWithAndWithoutBias) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = Context();
  ASSERT_NE(ctx, nullptr);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.M << "x" << s.K << "x" << s.N);
    const auto x = RandomFloats(s.M * s.K, 1), w = RandomFloats(s.N * s.K, 2),
               b = RandomFloats(s.N, 3);
    DeviceBuffer<float> d_x(x), d_w(w), d_b(b), out(std::vector<float>(s.M * s.N, 123.f));
    ASSERT_TRUE(
        MatmulForward(*ctx, out.get(), d_x.get(), d_w.get(), d_b.get(), s.M, s.K, s.N).ok());
    EXPECT_TRUE(AllClose(out.ToHost(), Forward(x, w, &b, s), Tol(s.K), 0));
    ASSERT_TRUE(MatmulForward(*ctx, out.get(), d_x.get(), d_w.get(), nullptr, s.M, s.K, s.N).ok());
    EXPECT_TRUE(AllClose(out.ToHost(), Forward(x, w, nullptr, s), Tol(s.K), 0));
  }
}

TEST(MatmulCudaTest, BackwardAccumulatesOverTwoMicroSteps) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = Context();
  ASSERT_NE(ctx, nullptr);
  for (bool accumulate_dinp : {false, true}) {
    for (const Shape& s : kShapes) {
      SCOPED_TRACE(::testing::Message()
                   << s.M << "x" << s.K << "x" << s.N << " accumulate_dinp=" << accumulate_dinp);
      const auto x = RandomFloats(s.M * s.K, 4), w = RandomFloats(s.N * s.K, 5);
      const auto dx0 = RandomFloats(s.M * s.K, 6), dw0 = RandomFloats(s.N * s.K, 7),
                 db0 = RandomFloats(s.N, 8);
      DeviceBuffer<float> d_x(x), d_w(w), dx(dx0), dw(dw0), db(db0);
      std::vector<double> want_dx(dx0.begin(), dx0.end()), want_dw(dw0.begin(), dw0.end()),
          want_db(db0.begin(), db0.end());
      for (int step = 0; step < 2; ++step) {
        const auto dy = RandomFloats(s.M * s.N, 9 + step);
        DeviceBuffer<float> d_dy(dy);
        ASSERT_TRUE(MatmulBackward(*ctx, dx.get(), dw.get(), db.get(), d_dy.get(), d_x.get(),
                                   d_w.get(), s.M, s.K, s.N, accumulate_dinp)
                        .ok());
        BackwardAccumulate(want_dx, want_dw, want_db, dy, x, w, s, accumulate_dinp);
      }
      EXPECT_TRUE(AllClose(dx.ToHost(), want_dx, 2 * Tol(s.N), 0));
      EXPECT_TRUE(AllClose(dw.ToHost(), want_dw, 2 * Tol(s.M), 0));
      EXPECT_TRUE(AllClose(db.ToHost(), want_db, 2 * Tol(s.M), 0));
    }
  }
}

TEST(MatmulCudaTest, BackwardSkipsNullGradients) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = Context();
  ASSERT_NE(ctx, nullptr);
  const Shape s{9, 10, 11};
  const auto x = RandomFloats(s.M * s.K, 1), w = RandomFloats(s.N * s.K, 2),
             dy = RandomFloats(s.M * s.N, 3);
  DeviceBuffer<float> d_x(x), d_w(w), d_dy(dy), dw(s.N * s.K);
  ASSERT_TRUE(MatmulBackward(*ctx, nullptr, dw.get(), nullptr, d_dy.get(), d_x.get(), nullptr, s.M,
                             s.K, s.N)
                  .ok());
  std::vector<double> dx(s.M * s.K), want_dw(s.N * s.K), db(s.N);
  BackwardAccumulate(dx, want_dw, db, dy, x, w, s, false);
  EXPECT_TRUE(AllClose(dw.ToHost(), want_dw, Tol(s.M), 0));
}

std::vector<__nv_bfloat16> ToBf16(const std::vector<float>& v) {
  std::vector<__nv_bfloat16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
  return out;
}
std::vector<float> FromBf16(const std::vector<__nv_bfloat16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}

// bf16 inputs are exact in the reference (it uses their rounded values). The forward pass writes
// the bias into the bf16 output and adds the product with beta = 1; cuBLAS may round the product
// to bf16 before that addition (seen on an H200: 0.0047 off a result of -0.032 whose product and
// bias were each near 1 in magnitude). So each element may carry three bf16 roundings, each at
// most 2^-8 of the value rounded (bf16 keeps 8 significant bits): the bias, the product and the
// sum; plus the fp32 accumulation.
::testing::AssertionResult Bf16ForwardClose(const std::vector<float>& got,
                                            const std::vector<double>& product,
                                            const std::vector<float>& bias, const Shape& s) {
  int64_t bad = 0, worst = -1;
  double worst_excess = 0;
  for (int64_t i = 0; i < s.M * s.N; ++i) {
    const double b = bias[i % s.N], want = product[i] + b;
    const double bound =
        Tol(s.K) + std::ldexp(std::fabs(b) + std::fabs(product[i]) + std::fabs(want), -8);
    const double excess = std::fabs(got[i] - want) - bound;
    if (!(excess <= 0)) {  // NaN counts as out of bounds
      ++bad;
      if (worst < 0 || !(excess <= worst_excess)) worst = i, worst_excess = excess;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << s.M * s.N << " elements out of bounds; worst [" << worst << "]: got "
         << got[worst] << ", product " << product[worst] << ", bias " << bias[worst % s.N]
         << " (over the bound by " << worst_excess << ")";
}

// The backward GEMMs write fresh outputs (beta = 0): one bf16 rounding of dinp (2^-8 relative).
TEST(MatmulCudaTest, Bf16ForwardAndBackward) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = Context();
  ASSERT_NE(ctx, nullptr);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.M << "x" << s.K << "x" << s.N);
    const auto x = FromBf16(ToBf16(RandomFloats(s.M * s.K, 11)));
    const auto w = FromBf16(ToBf16(RandomFloats(s.N * s.K, 12)));
    const auto b = RandomFloats(s.N, 13);
    const auto dy = FromBf16(ToBf16(RandomFloats(s.M * s.N, 14)));
    DeviceBuffer<__nv_bfloat16> d_x(ToBf16(x)), d_w(ToBf16(w)), d_dy(ToBf16(dy)), out(s.M * s.N),
        dx(s.M * s.K);
    DeviceBuffer<float> d_b(b), dw(s.N * s.K), db(s.N);
    ASSERT_TRUE(
        MatmulForwardBf16(*ctx, out.get(), d_x.get(), d_w.get(), d_b.get(), s.M, s.K, s.N).ok());
    EXPECT_TRUE(Bf16ForwardClose(FromBf16(out.ToHost()), Forward(x, w, nullptr, s), b, s));
    ASSERT_TRUE(MatmulBackwardBf16(*ctx, dx.get(), dw.get(), db.get(), d_dy.get(), d_x.get(),
                                   d_w.get(), s.M, s.K, s.N)
                    .ok());
    std::vector<double> want_dx(s.M * s.K), want_dw(s.N * s.K), want_db(s.N);
    BackwardAccumulate(want_dx, want_dw, want_db, dy, x, w, s, false);
    EXPECT_TRUE(AllClose(FromBf16(dx.ToHost()), want_dx, Tol(s.N), 4e-3));
    EXPECT_TRUE(AllClose(dw.ToHost(), want_dw, Tol(s.M), 0));
    EXPECT_TRUE(AllClose(db.ToHost(), want_db, Tol(s.M), 0));
  }
}

// Mixed: bf16 operands (exact in the reference), fp32 outputs, so only the fp32 accumulation
// rounds; dweight is overwritten or accumulated; dbias sums the fp32 dout (not its rounding).
TEST(MatmulCudaTest, MixedForwardAndBackwardKeepFp32Outputs) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = Context();
  ASSERT_NE(ctx, nullptr);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.M << "x" << s.K << "x" << s.N);
    const auto x = FromBf16(ToBf16(RandomFloats(s.M * s.K, 31)));
    const auto w = FromBf16(ToBf16(RandomFloats(s.N * s.K, 32)));
    const auto b = RandomFloats(s.N, 33);
    const auto dy32 = RandomFloats(s.M * s.N, 34);
    const auto dy = FromBf16(ToBf16(dy32));
    DeviceBuffer<__nv_bfloat16> d_x(ToBf16(x)), d_w(ToBf16(w)), d_dy(ToBf16(dy));
    DeviceBuffer<float> d_b(b), d_dy32(dy32), out(s.M * s.N), dx(s.M * s.K), dw(s.N * s.K), db(s.N);
    ASSERT_TRUE(
        MatmulForwardMixed(*ctx, out.get(), d_x.get(), d_w.get(), d_b.get(), s.M, s.K, s.N).ok());
    EXPECT_TRUE(AllClose(out.ToHost(), Forward(x, w, &b, s), Tol(s.K), 0));
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(accumulate);
      const std::vector<float> dw0 = RandomFloats(s.N * s.K, 35);
      dw.Upload(dw0);
      db.Upload(std::vector<float>(s.N, 0.f));
      ASSERT_TRUE(MatmulBackwardMixed(*ctx, dx.get(), dw.get(), db.get(), d_dy.get(), d_dy32.get(),
                                      d_x.get(), d_w.get(), s.M, s.K, s.N, accumulate)
                      .ok());
      std::vector<double> want_dx(s.M * s.K), want_dw(s.N * s.K), unused(s.N), want_db(s.N);
      if (accumulate) want_dw.assign(dw0.begin(), dw0.end());
      BackwardAccumulate(want_dx, want_dw, unused, dy, x, w, s, false);
      for (int64_t j = 0; j < s.N; ++j) {
        for (int64_t i = 0; i < s.M; ++i) want_db[j] += dy32[i * s.N + j];
      }
      EXPECT_TRUE(AllClose(dx.ToHost(), want_dx, Tol(s.N), 0));
      EXPECT_TRUE(AllClose(dw.ToHost(), want_dw, Tol(s.M), 0));
      EXPECT_TRUE(AllClose(db.ToHost(), want_db, Tol(s.M), 0));
    }
  }
}

// Every transpose combination, batched, with padded row strides and batch strides: the padding of
// C must stay untouched.
TEST(MatmulCudaTest, GemmRowMajorTransposesBatchesAndStrides) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = Context();
  ASSERT_NE(ctx, nullptr);
  const int64_t M = 5, N = 7, K = 9, batch = 3, pad = 2;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "trans_a=" << ta << " trans_b=" << tb);
      const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K;
      const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N;
      const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = N + pad;
      const int64_t sa = a_rows * lda + 3, sb = b_rows * ldb + 1, sc = M * ldc + 4;
      const auto a = RandomFloats(batch * sa, 1), b = RandomFloats(batch * sb, 2);
      const auto c0 = RandomFloats(batch * sc, 3);
      DeviceBuffer<float> d_a(a), d_b(b), d_c(c0);
      const float alpha = 0.75f, beta = -0.5f;
      ASSERT_TRUE(GemmRowMajor(*ctx, ta, tb, M, N, K, alpha, d_a.get(), lda, sa, d_b.get(), ldb, sb,
                               DType::kF32, beta, d_c.get(), ldc, sc, DType::kF32, batch)
                      .ok());
      std::vector<double> want(c0.begin(), c0.end());  // padding stays as it was
      for (int64_t q = 0; q < batch; ++q) {
        for (int64_t i = 0; i < M; ++i) {
          for (int64_t j = 0; j < N; ++j) {
            double acc = 0;
            for (int64_t k = 0; k < K; ++k) {
              const double av = ta ? a[q * sa + k * lda + i] : a[q * sa + i * lda + k];
              const double bv = tb ? b[q * sb + j * ldb + k] : b[q * sb + k * ldb + j];
              acc += av * bv;
            }
            const int64_t c = q * sc + i * ldc + j;
            want[c] = alpha * acc + beta * double(c0[c]);
          }
        }
      }
      EXPECT_TRUE(AllClose(d_c.ToHost(), want, Tol(K), 1e-7));
    }
  }
}

TEST(MatmulCudaTest, Tf32OptionStillMultiplies) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = Context(CublasContext::Options{.allow_tf32 = true});
  ASSERT_NE(ctx, nullptr);
  const Shape s{64, 128, 96};
  const auto x = RandomFloats(s.M * s.K, 1), w = RandomFloats(s.N * s.K, 2);
  DeviceBuffer<float> d_x(x), d_w(w), out(s.M * s.N);
  ASSERT_TRUE(MatmulForward(*ctx, out.get(), d_x.get(), d_w.get(), nullptr, s.M, s.K, s.N).ok());
  // TF32 keeps 10 mantissa bits of each input: ~2^-11 relative per product.
  EXPECT_TRUE(AllClose(out.ToHost(), Forward(x, w, nullptr, s), 1e-3 * s.K, 0));
}

TEST(MatmulCudaTest, EmptyShapesAndInvalidArguments) {
  DT_SKIP_WITHOUT_CUDA_DEVICE();
  auto ctx = Context();
  ASSERT_NE(ctx, nullptr);
  // K = 0: out = bias; dinp = 0.
  DeviceBuffer<float> b(std::vector<float>{1.f, 2.f}), out(std::vector<float>(6, 9.f)),
      dx(std::vector<float>(6, 9.f)), dy(std::vector<float>(6, 1.f));
  ASSERT_TRUE(MatmulForward(*ctx, out.get(), nullptr, nullptr, b.get(), 3, 0, 2).ok());
  EXPECT_EQ(out.ToHost(), (std::vector<float>{1, 2, 1, 2, 1, 2}));
  ASSERT_TRUE(
      MatmulBackward(*ctx, dx.get(), nullptr, nullptr, dy.get(), nullptr, nullptr, 3, 2, 0).ok());
  EXPECT_EQ(dx.ToHost(), std::vector<float>(6, 0.f));
  EXPECT_TRUE(MatmulForward(*ctx, nullptr, nullptr, nullptr, nullptr, 0, 4, 4).ok());
  EXPECT_EQ(MatmulForward(*ctx, nullptr, nullptr, nullptr, nullptr, -1, 4, 4).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GemmRowMajor(*ctx, false, false, 4, 4, 4, 1.f, out.get(), 3, 0, out.get(), 4, 0,
                         DType::kF32, 0.f, out.get(), 4, 0, DType::kF32)
                .code(),
            absl::StatusCode::kInvalidArgument);  // lda < K
  EXPECT_EQ(GemmRowMajor(*ctx, false, false, 1, 1, 1, 1.f, out.get(), 1, 0, out.get(), 1, 0,
                         DType::kF32, 0.f, out.get(), 1, 0, DType::kBF16)
                .code(),
            absl::StatusCode::kInvalidArgument);  // fp32 inputs, bf16 output
}

}  // namespace
}  // namespace dstrain::kernels::gpu
