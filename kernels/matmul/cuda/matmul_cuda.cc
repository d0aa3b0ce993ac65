#include "kernels/matmul/cuda/matmul_cuda.h"

#include <climits>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "kernels/cuda_common/cublas_status.h"
#include "kernels/cuda_common/cuda_status.h"
#include "kernels/matmul/cuda/matmul_launch.h"

namespace dstrain::kernels::gpu {
namespace {

cudaDataType ToCuda(DType t) {
  switch (t) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:  // kF32; GemmRowMajor refuses the integer types before asking
      break;
  }
  return CUDA_R_32F;
}

bool FitsInt(int64_t v) { return v >= 0 && v <= INT_MAX; }

absl::Status CheckMatmulShape(const char* op, int64_t M, int64_t K, int64_t N) {
  if (!FitsInt(M) || !FitsInt(K) || !FitsInt(N)) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": dimensions must lie in [0, INT_MAX]: M=", M, " K=", K, " N=", N));
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status Forward(const CublasContext& ctx, DType type, T* out, const T* inp, const T* weight,
                     const float* bias, int64_t M, int64_t K, int64_t N) {
  DT_RETURN_IF_ERROR(CheckMatmulShape("MatmulForward", M, K, N));
  if (M == 0 || N == 0) return absl::OkStatus();
  if (out == nullptr || (K > 0 && (inp == nullptr || weight == nullptr))) {
    return absl::InvalidArgumentError("MatmulForward: null pointer");
  }
  float beta = 0.0f;
  if (bias != nullptr) {
    DT_CUDA_RETURN_IF_ERROR(LaunchBroadcastBias(out, bias, M, static_cast<int>(N), ctx.stream()));
    beta = 1.0f;
  }
  if (K == 0) {  // an empty product: out = bias, or 0
    if (bias == nullptr) {
      DT_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, M * N * sizeof(T), ctx.stream()));
    }
    return absl::OkStatus();
  }
  // out (M, N) = inp (M, K) · weight (N, K)ᵀ
  return GemmRowMajor(ctx, /*trans_a=*/false, /*trans_b=*/true, M, N, K, 1.0f, inp, K, 0, weight, K,
                      0, type, beta, out, N, 0, type);
}

template <typename T>
absl::Status Backward(const CublasContext& ctx, DType type, T* dinp, float* dweight, float* dbias,
                      const T* dout, const T* inp, const T* weight, int64_t M, int64_t K, int64_t N,
                      bool accumulate_dinp) {
  DT_RETURN_IF_ERROR(CheckMatmulShape("MatmulBackward", M, K, N));
  if (M == 0) return absl::OkStatus();  // every output is empty or gets an empty sum
  if (N == 0) {                         // dinp = an empty sum; dweight and dbias are empty
    if (dinp != nullptr && K > 0 && !accumulate_dinp) {
      DT_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dinp, 0, M * K * sizeof(T), ctx.stream()));
    }
    return absl::OkStatus();
  }
  if (dout == nullptr || (dinp != nullptr && K > 0 && weight == nullptr) ||
      (dweight != nullptr && K > 0 && inp == nullptr)) {
    return absl::InvalidArgumentError("MatmulBackward: null pointer");
  }
  if (dinp != nullptr && K > 0) {
    // dinp (M, K) = dout (M, N) · weight (N, K)
    DT_RETURN_IF_ERROR(GemmRowMajor(ctx, false, false, M, K, N, 1.0f, dout, N, 0, weight, K, 0,
                                    type, accumulate_dinp ? 1.0f : 0.0f, dinp, K, 0, type));
  }
  if (dweight != nullptr && K > 0) {
    // dweight (N, K) += dout (M, N)ᵀ · inp (M, K)
    DT_RETURN_IF_ERROR(GemmRowMajor(ctx, true, false, N, K, M, 1.0f, dout, N, 0, inp, K, 0, type,
                                    1.0f, dweight, K, 0, DType::kF32));
  }
  if (dbias != nullptr) {
    DT_CUDA_RETURN_IF_ERROR(LaunchAddBiasGrad(dbias, dout, M, static_cast<int>(N), ctx.stream()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CublasContext>> CublasContext::Create(cudaStream_t stream,
                                                                     Options options) {
  cublasHandle_t handle = nullptr;
  DT_CUBLAS_RETURN_IF_ERROR(cublasCreate(&handle));
  std::unique_ptr<CublasContext> ctx(new CublasContext(handle, stream, options));
  DT_CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle, stream));
  // Keep every reduction, split-K ones included, in fp32 for bf16 / fp16 inputs.
  DT_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(
      handle, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                        CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  return ctx;
}

CublasContext::~CublasContext() {
  if (handle_ != nullptr) cublasDestroy(handle_);
}

absl::Status GemmRowMajor(const CublasContext& ctx, bool trans_a, bool trans_b, int64_t M,
                          int64_t N, int64_t K, float alpha, const void* A, int64_t lda,
                          int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b,
                          DType ab_type, float beta, void* C, int64_t ldc, int64_t stride_c,
                          DType c_type, int64_t batch) {
  if (!FitsInt(M) || !FitsInt(N) || !FitsInt(K) || !FitsInt(batch) || !FitsInt(lda) ||
      !FitsInt(ldb) || !FitsInt(ldc)) {
    return absl::InvalidArgumentError(absl::StrCat("GemmRowMajor: sizes must lie in [0, INT_MAX]:",
                                                   " M=", M, " N=", N, " K=", K, " batch=", batch));
  }
  const int64_t a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
  if (lda < std::max<int64_t>(1, a_cols) || ldb < std::max<int64_t>(1, b_cols) ||
      ldc < std::max<int64_t>(1, N)) {
    return absl::InvalidArgumentError(
        absl::StrCat("GemmRowMajor: row strides too small: lda=", lda, " ldb=", ldb, " ldc=", ldc));
  }
  if (ab_type != DType::kF32 && ab_type != DType::kBF16 && ab_type != DType::kF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("GemmRowMajor: ", DTypeName(ab_type), " inputs: f32, bf16 or f16 only"));
  }
  if (c_type != DType::kF32 && c_type != ab_type) {
    return absl::InvalidArgumentError(absl::StrCat("GemmRowMajor: ", DTypeName(ab_type),
                                                   " inputs cannot write ", DTypeName(c_type)));
  }
  if (M == 0 || N == 0 || batch == 0) return absl::OkStatus();
  if (C == nullptr || (K > 0 && (A == nullptr || B == nullptr))) {
    return absl::InvalidArgumentError("GemmRowMajor: null pointer");
  }
  const cublasComputeType_t compute = ab_type == DType::kF32 && ctx.options().allow_tf32
                                          ? CUBLAS_COMPUTE_32F_FAST_TF32
                                          : CUBLAS_COMPUTE_32F;
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  // Column-major Cᵀ (N, M) = op(B)ᵀ (N, K) · op(A)ᵀ (K, M): the row-major buffers, read as
  // column-major, already are the transposes.
  if (batch == 1) {
    DT_CUBLAS_RETURN_IF_ERROR(
        cublasGemmEx(ctx.handle(), op_b, op_a, static_cast<int>(N), static_cast<int>(M),
                     static_cast<int>(K), &alpha, B, ToCuda(ab_type), static_cast<int>(ldb), A,
                     ToCuda(ab_type), static_cast<int>(lda), &beta, C, ToCuda(c_type),
                     static_cast<int>(ldc), compute, CUBLAS_GEMM_DEFAULT));
  } else {
    DT_CUBLAS_RETURN_IF_ERROR(cublasGemmStridedBatchedEx(
        ctx.handle(), op_b, op_a, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K),
        &alpha, B, ToCuda(ab_type), static_cast<int>(ldb), stride_b, A, ToCuda(ab_type),
        static_cast<int>(lda), stride_a, &beta, C, ToCuda(c_type), static_cast<int>(ldc), stride_c,
        static_cast<int>(batch), compute, CUBLAS_GEMM_DEFAULT));
  }
  return absl::OkStatus();
}

absl::Status MatmulForward(const CublasContext& ctx, float* out, const float* inp,
                           const float* weight, const float* bias, int64_t M, int64_t K,
                           int64_t N) {
  return Forward(ctx, DType::kF32, out, inp, weight, bias, M, K, N);
}

absl::Status MatmulBackward(const CublasContext& ctx, float* dinp, float* dweight, float* dbias,
                            const float* dout, const float* inp, const float* weight, int64_t M,
                            int64_t K, int64_t N, bool accumulate_dinp) {
  return Backward(ctx, DType::kF32, dinp, dweight, dbias, dout, inp, weight, M, K, N,
                  accumulate_dinp);
}

absl::Status MatmulForwardBf16(const CublasContext& ctx, __nv_bfloat16* out,
                               const __nv_bfloat16* inp, const __nv_bfloat16* weight,
                               const float* bias, int64_t M, int64_t K, int64_t N) {
  return Forward(ctx, DType::kBF16, out, inp, weight, bias, M, K, N);
}

absl::Status MatmulBackwardBf16(const CublasContext& ctx, __nv_bfloat16* dinp, float* dweight,
                                float* dbias, const __nv_bfloat16* dout, const __nv_bfloat16* inp,
                                const __nv_bfloat16* weight, int64_t M, int64_t K, int64_t N,
                                bool accumulate_dinp) {
  return Backward(ctx, DType::kBF16, dinp, dweight, dbias, dout, inp, weight, M, K, N,
                  accumulate_dinp);
}

absl::Status MatmulForwardMixed(const CublasContext& ctx, float* out, const __nv_bfloat16* inp,
                                const __nv_bfloat16* weight, const float* bias, int64_t M,
                                int64_t K, int64_t N) {
  DT_RETURN_IF_ERROR(CheckMatmulShape("MatmulForwardMixed", M, K, N));
  if (M == 0 || N == 0) return absl::OkStatus();
  if (out == nullptr || (K > 0 && (inp == nullptr || weight == nullptr))) {
    return absl::InvalidArgumentError("MatmulForwardMixed: null pointer");
  }
  float beta = 0.0f;
  if (bias != nullptr) {
    DT_CUDA_RETURN_IF_ERROR(LaunchBroadcastBias(out, bias, M, static_cast<int>(N), ctx.stream()));
    beta = 1.0f;
  }
  if (K == 0) {
    if (bias == nullptr) {
      DT_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, M * N * sizeof(float), ctx.stream()));
    }
    return absl::OkStatus();
  }
  return GemmRowMajor(ctx, false, true, M, N, K, 1.0f, inp, K, 0, weight, K, 0, DType::kBF16, beta,
                      out, N, 0, DType::kF32);
}

absl::Status MatmulBackwardMixed(const CublasContext& ctx, float* dinp, float* dweight,
                                 float* dbias, const __nv_bfloat16* dout16, const float* dout,
                                 const __nv_bfloat16* inp, const __nv_bfloat16* weight, int64_t M,
                                 int64_t K, int64_t N, bool accumulate_dweight) {
  DT_RETURN_IF_ERROR(CheckMatmulShape("MatmulBackwardMixed", M, K, N));
  if (M == 0 || N == 0 || K == 0) return absl::OkStatus();
  if (dinp == nullptr || dweight == nullptr || dout16 == nullptr || inp == nullptr ||
      weight == nullptr || (dbias != nullptr && dout == nullptr)) {
    return absl::InvalidArgumentError("MatmulBackwardMixed: null pointer");
  }
  // dinp (M, K) = dout (M, N) · weight (N, K)
  DT_RETURN_IF_ERROR(GemmRowMajor(ctx, false, false, M, K, N, 1.0f, dout16, N, 0, weight, K, 0,
                                  DType::kBF16, 0.0f, dinp, K, 0, DType::kF32));
  // dweight (N, K) (+)= dout (M, N)ᵀ · inp (M, K)
  DT_RETURN_IF_ERROR(GemmRowMajor(ctx, true, false, N, K, M, 1.0f, dout16, N, 0, inp, K, 0,
                                  DType::kBF16, accumulate_dweight ? 1.0f : 0.0f, dweight, K, 0,
                                  DType::kF32));
  if (dbias != nullptr) {
    DT_CUDA_RETURN_IF_ERROR(LaunchAddBiasGrad(dbias, dout, M, static_cast<int>(N), ctx.stream()));
  }
  return absl::OkStatus();
}

}  // namespace dstrain::kernels::gpu
