// Dense matrix products for linear layers on the GPU through cuBLAS (cublasGemmEx), with the
// shapes and contracts of kernels/matmul/matmul.h (weights are (OC, C), row-major; y = x·Wᵀ + b):
//   forward:  out (M, N) = inp (M, K) · weight (N, K)ᵀ + bias (N)           (overwrites out)
//   backward: dinp (M, K) = dout · weight    (overwritten, or accumulated with accumulate_dinp;
//                                              skipped when dinp is null)
//             dweight (N, K) += doutᵀ · inp  (skipped when null)
//             dbias (N) += Σ_rows dout       (skipped when null; deterministic column reduction)
// fp32 variants use fp32 inputs; the Bf16 variants take bf16 activations and weights, produce
// bf16 out / dinp, and accumulate dweight / dbias in fp32. Accumulation is fp32 throughout
// (CUBLAS_COMPUTE_32F; reduced-precision split-K reductions disallowed). TF32 tensor cores are
// used for fp32 inputs only when CublasContext::Options::allow_tf32 is set (default off: exact
// fp32, matching the CPU kernel to rounding). A bias is added by first broadcasting it into `out`
// and then running the GEMM with beta = 1 (for bf16 output the bias is rounded to bf16 once more).
//
// Every call is enqueued on the context's stream; nothing is waited for. Device pointers.
// Errors: kInvalidArgument for negative or > INT_MAX dimensions or null required pointers;
// cuBLAS failures via CublasToStatus; CUDA failures via CudaToStatus.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/types/dtype.h"

namespace dstrain::kernels::gpu {

// A cuBLAS handle bound to one CUDA stream; every cuBLAS-backed kernel takes one and runs on its
// stream. Owns the handle (destroyed with the context). Not thread-safe: use one context per host
// thread and stream, as cuBLAS requires for its handles.
class CublasContext {
 public:
  struct Options {
    bool allow_tf32 = false;  // fp32 GEMMs on TF32 tensor cores (~10 bits of mantissa per input)
  };

  // Errors: kInternal / kFailedPrecondition from cublasCreate (e.g. no device).
  static absl::StatusOr<std::unique_ptr<CublasContext>> Create(cudaStream_t stream,
                                                               Options options);
  static absl::StatusOr<std::unique_ptr<CublasContext>> Create(cudaStream_t stream) {
    return Create(stream, Options());
  }
  ~CublasContext();
  CublasContext(const CublasContext&) = delete;
  CublasContext& operator=(const CublasContext&) = delete;

  cublasHandle_t handle() const { return handle_; }
  cudaStream_t stream() const { return stream_; }
  const Options& options() const { return options_; }

 private:
  CublasContext(cublasHandle_t handle, cudaStream_t stream, Options options)
      : handle_(handle), stream_(stream), options_(options) {}

  cublasHandle_t handle_;
  cudaStream_t stream_;
  Options options_;
};

// Row-major, strided-batched GEMM on the context's stream:
//   C_b (M, N) = alpha · op(A_b) · op(B_b) + beta · C_b,   b = 0 .. batch − 1
// where op(X) = Xᵀ when trans_x. X_b starts stride_x elements after X_{b−1}; lda/ldb/ldc are
// row strides in elements (A is stored (M, K) with lda >= K, or (K, M) with lda >= M when
// trans_a; B is (K, N), ldb >= N, or (N, K), ldb >= K when trans_b; C is (M, N), ldc >= N).
// A and B share `ab_type`; C is fp32, or ab_type when that is bf16 / fp16. C is not read when
// beta == 0. (Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLAS is called with
// the operands swapped.)
absl::Status GemmRowMajor(const CublasContext& ctx, bool trans_a, bool trans_b, int64_t M,
                          int64_t N, int64_t K, float alpha, const void* A, int64_t lda,
                          int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b,
                          DType ab_type, float beta, void* C, int64_t ldc, int64_t stride_c,
                          DType c_type, int64_t batch = 1);

absl::Status MatmulForward(const CublasContext& ctx,
                           float* out,           // (M, N)
                           const float* inp,     // (M, K)
                           const float* weight,  // (N, K)
                           const float* bias,    // (N) or null
                           int64_t M, int64_t K, int64_t N);

absl::Status MatmulBackward(const CublasContext& ctx,
                            float* dinp,          // (M, K) or null
                            float* dweight,       // (N, K) accumulated, or null
                            float* dbias,         // (N) accumulated, or null
                            const float* dout,    // (M, N)
                            const float* inp,     // (M, K)
                            const float* weight,  // (N, K)
                            int64_t M, int64_t K, int64_t N, bool accumulate_dinp = false);

absl::Status MatmulForwardBf16(const CublasContext& ctx,
                               __nv_bfloat16* out,           // (M, N)
                               const __nv_bfloat16* inp,     // (M, K)
                               const __nv_bfloat16* weight,  // (N, K)
                               const float* bias,            // (N) or null
                               int64_t M, int64_t K, int64_t N);

absl::Status MatmulBackwardBf16(const CublasContext& ctx,
                                __nv_bfloat16* dinp,          // (M, K) or null
                                float* dweight,               // (N, K) accumulated, or null
                                float* dbias,                 // (N) accumulated, or null
                                const __nv_bfloat16* dout,    // (M, N)
                                const __nv_bfloat16* inp,     // (M, K)
                                const __nv_bfloat16* weight,  // (N, K)
                                int64_t M, int64_t K, int64_t N, bool accumulate_dinp = false);

// bf16 mixed precision with fp32 activations: the products take bf16 operands (the caller rounds
// them) and accumulate in fp32 into fp32 outputs; the bias is added and its gradient summed in
// fp32. Forward: out (M, N) = inp16 · weight16ᵀ + bias (overwritten).
absl::Status MatmulForwardMixed(const CublasContext& ctx,
                                float* out,                   // (M, N)
                                const __nv_bfloat16* inp,     // (M, K)
                                const __nv_bfloat16* weight,  // (N, K)
                                const float* bias,            // (N) or null
                                int64_t M, int64_t K, int64_t N);
// Backward: dinp (M, K) = dout16 · weight16 (overwritten); dweight (N, K) += dout16ᵀ · inp16, or
// = when !accumulate_dweight; dbias (N) += the column sums of the fp32 dout (null: skipped).
absl::Status MatmulBackwardMixed(const CublasContext& ctx,
                                 float* dinp,                  // (M, K)
                                 float* dweight,               // (N, K)
                                 float* dbias,                 // (N) or null
                                 const __nv_bfloat16* dout16,  // (M, N)
                                 const float* dout,            // (M, N), for dbias
                                 const __nv_bfloat16* inp,     // (M, K)
                                 const __nv_bfloat16* weight,  // (N, K)
                                 int64_t M, int64_t K, int64_t N, bool accumulate_dweight = true);

}  // namespace dstrain::kernels::gpu
