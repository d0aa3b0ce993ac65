// Dense fp32 and bf16 matrix products for linear layers, on the CPU through oneDNN.
//
// oneDNN (Debian's libdnnl 2.6) picks its AVX-512 / AVX2 / SSE kernels at run time, so these
// functions are safe on any x86-64 CPU. It runs on the OpenMP thread pool, the same one the other
// kernels use, so nothing here oversubscribes the cores. Measured on the 2-core Zen 4 dev machine
// (matmul_benchmark): fp32 ~155–225 GFLOP/s at the GPT shapes (the 2-core fp32 peak is ~220),
// GemmBf16 ~400–435 GFLOP/s there (1.85–2.8x); MatmulForwardBf16 / MatmulBackwardBf16, rounding
// included, 1.8–2.4x / 1.4–1.8x their fp32 versions.
//
// MatmulForward runs oneDNN's fp32 matmul primitive with the bias fused where the ISA is AVX-512
// (faster there than dnnl_sgemm after a bias fill, as measured in matmul_cpu.cc), dnnl_sgemm
// elsewhere and for every backward product.
//
// Conventions follow nn.Linear / llm.c: a weight is (OC, C), row-major; y = x · Wᵀ + b.
// Thread-safe. The functions keep state per calling thread only: the oneDNN primitives made (bf16,
// and the fp32 forward's) for the shapes seen (at most 64, then dropped) and, for
// MatmulForwardBf16 / MatmulBackwardBf16,
// the bf16 copies of the operands (without oneDNN's bf16 kernels: fp32 copies of the rounded
// values) in ThreadScratch (kernels/common/threading.h), which grows to the largest operands seen
// and which a caller must not hold across these calls.
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
//   dweight (N, K) += doutᵀ · inp          accumulates (gradient accumulation); with
//                                          accumulate_dweight = false overwritten instead (a
//                                          fresh gradient buffer is neither zeroed nor read)
//   dbias (N)      += column sums of dout  skipped when dbias is null
void MatmulBackward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                    const float* weight, int64_t M, int64_t K, int64_t N,
                    bool accumulate_dinp = false, bool accumulate_dweight = true);

// General row-major single-precision GEMM: C (M, N) = alpha · op(A) · op(B) + beta · C, where
// op(X) = Xᵀ when trans_x. lda/ldb/ldc are the row strides of A, B, C as stored.
void Sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// bf16 products with fp32 accumulation, C (M, N) = alpha · op(A) · op(B) + beta · C, where A and
// B are bf16 (uint16_t storage) and C is fp32; with beta == 0, C is not read. Arguments as Sgemm.
// On a CPU with AVX512_BF16, oneDNN's matmul primitive runs it at about twice the fp32 rate
// (dense operands; padded leading dimensions get a slower generic oneDNN kernel). Without
// AVX512_BF16, or with DSTRAIN_MAX_ISA below avx512, the operands are widened to fp32 (exact) and
// multiplied by Sgemm: the same products, at the fp32 rate, where oneDNN would emulate bf16 at a
// third of it or (AVX2) have no bf16 kernel at all.
void GemmBf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
              int64_t ldc);

// MatmulForward / MatmulBackward with every product in bf16: the fp32 operands are rounded to
// bf16 on the way in (per-thread scratch), products accumulate in fp32, outputs and gradients
// stay fp32, with the same contracts (overwrite / accumulate / null) as the fp32 versions. The
// bias is added in fp32 (fused into oneDNN's kernel); dbias sums the fp32 dout, as
// MatmulBackward does.
void MatmulForwardBf16(float* out, const float* inp, const float* weight, const float* bias,
                       int64_t M, int64_t K, int64_t N);
void MatmulBackwardBf16(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, int64_t M, int64_t K, int64_t N,
                        bool accumulate_dinp = false, bool accumulate_dweight = true);
// The same with the weight already in bf16 (bf16 parameter storage): no rounding pass over it.
void MatmulForwardBf16(float* out, const float* inp, const uint16_t* weight16, const float* bias,
                       int64_t M, int64_t K, int64_t N);
void MatmulBackwardBf16(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const uint16_t* weight16, int64_t M, int64_t K, int64_t N,
                        bool accumulate_dinp = false, bool accumulate_dweight = true);
// The same with the input already in bf16 (inp16: activations stored rounded, which only these
// products read): no rounding pass over it, the same results as passing its fp32 values.
void MatmulForwardBf16(float* out, const uint16_t* inp16, const float* weight, const float* bias,
                       int64_t M, int64_t K, int64_t N);
void MatmulForwardBf16(float* out, const uint16_t* inp16, const uint16_t* weight16,
                       const float* bias, int64_t M, int64_t K, int64_t N);
void MatmulBackwardBf16(float* dinp, float* dweight, float* dbias, const float* dout,
                        const uint16_t* inp16, const float* weight, int64_t M, int64_t K, int64_t N,
                        bool accumulate_dinp = false, bool accumulate_dweight = true);
void MatmulBackwardBf16(float* dinp, float* dweight, float* dbias, const float* dout,
                        const uint16_t* inp16, const uint16_t* weight16, int64_t M, int64_t K,
                        int64_t N, bool accumulate_dinp = false, bool accumulate_dweight = true);

}  // namespace dstrain::kernels
