// Dense fp32 matrix products for linear layers, on the CPU through oneDNN's GEMM.
//
// oneDNN (Debian's libdnnl 2.6) picks its AVX-512 / AVX2 / SSE kernels at run time, so these
// functions are safe on any x86-64 CPU. It runs on the OpenMP thread pool, the same one the other
// kernels use, so nothing here oversubscribes the cores. Measured on the 2-core Zen 4 dev machine:
// ~190–220 GFLOP/s at the GPT shapes (the 2-core fp32 peak is ~220).
//
// Conventions follow nn.Linear / llm.c: a weight is (OC, C), row-major; y = x · Wᵀ + b.
// Thread-safe: no shared state.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace dstrain::kernels {

// out (M, N) = inp (M, K) · weight (N, K)ᵀ + bias (N). bias may be null. Overwrites out.
void MatmulForward(float* out, const float* inp, const float* weight, const float* bias, int64_t M,
                   int64_t K, int64_t N);

// The gradients of MatmulForward given dout (M, N).
//   dinp (M, K)     = dout · weight        overwritten, or accumulated when accumulate_dinp;
//                                          skipped when dinp is null
//   dweight (N, K) += doutᵀ · inp          always accumulates (gradient accumulation)
//   dbias (N)      += column sums of dout  skipped when dbias is null
void MatmulBackward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                    const float* weight, int64_t M, int64_t K, int64_t N,
                    bool accumulate_dinp = false);

// General row-major single-precision GEMM: C (M, N) = alpha · op(A) · op(B) + beta · C, where
// op(X) = Xᵀ when trans_x. lda/ldb/ldc are the row strides of A, B, C as stored.
void Sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace dstrain::kernels
