#include <oneapi/dnnl/dnnl.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/matmul/matmul.h"

namespace dstrain::kernels {

void Sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    // oneDNN rejects K == 0; the product is empty, so C = beta · C.
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    }
    return;
  }
  dnnl_status_t s = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B,
                               ldb, beta, C, ldc);
  if (s != dnnl_success) {
    // Only reachable with inconsistent shapes, which callers validate: a true invariant.
    std::fprintf(stderr, "dnnl_sgemm failed (status %d) M=%ld N=%ld K=%ld\n", static_cast<int>(s),
                 static_cast<long>(M), static_cast<long>(N), static_cast<long>(K));
    std::abort();
  }
}

void MatmulForward(float* out, const float* inp, const float* weight, const float* bias, int64_t M,
                   int64_t K, int64_t N) {
  float beta = 0.f;
  if (bias != nullptr) {
    // Start from the broadcast bias and let the GEMM accumulate onto it: one pass, no temporary.
#pragma omp parallel for if (M * N > (1 << 16))
    for (int64_t i = 0; i < M; ++i) {
      float* row = out + i * N;
      for (int64_t j = 0; j < N; ++j) row[j] = bias[j];
    }
    beta = 1.f;
  }
  Sgemm(/*trans_a=*/false, /*trans_b=*/true, M, N, K, 1.f, inp, K, weight, K, beta, out, N);
}

void MatmulBackward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                    const float* weight, int64_t M, int64_t K, int64_t N, bool accumulate_dinp) {
  if (dinp != nullptr) {
    Sgemm(false, false, M, K, N, 1.f, dout, N, weight, K, accumulate_dinp ? 1.f : 0.f, dinp, K);
  }
  if (dweight != nullptr) {
    Sgemm(true, false, N, K, M, 1.f, dout, N, inp, K, 1.f, dweight, K);
  }
  if (dbias != nullptr) {
    // Column sums, split over column blocks so every thread owns its outputs (deterministic).
    constexpr int64_t kBlock = 64;
#pragma omp parallel for if (M * N > (1 << 16))
    for (int64_t j0 = 0; j0 < N; j0 += kBlock) {
      const int64_t j1 = j0 + kBlock < N ? j0 + kBlock : N;
      float acc[kBlock] = {};
      for (int64_t i = 0; i < M; ++i) {
        const float* row = dout + i * N;
        for (int64_t j = j0; j < j1; ++j) acc[j - j0] += row[j];
      }
      for (int64_t j = j0; j < j1; ++j) dbias[j] += acc[j - j0];
    }
  }
}

}  // namespace dstrain::kernels
