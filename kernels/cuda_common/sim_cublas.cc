// The CUDA simulator's cuBLAS: the few cuBLAS functions this project calls, as naive loops with
// cuBLAS's column-major semantics and argument checks, so that a wrong transpose, leading
// dimension or batch stride fails a CPU-only test. Accumulates in double (cuBLAS: fp32).
#include <cublas_v2.h>

#include <cstdint>

#include "kernels/cuda_common/sim.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace {

bool SupportedInput(cudaDataType t) {
  return t == CUDA_R_32F || t == CUDA_R_16BF || t == CUDA_R_16F;
}

size_t ElementSize(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

double Load(const void* p, cudaDataType t, int64_t i) {
  switch (t) {
    case CUDA_R_16BF:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case CUDA_R_16F:
      return __half2float(static_cast<const __half*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

void Store(void* p, cudaDataType t, int64_t i, double v) {
  const float f = static_cast<float>(v);
  switch (t) {
    case CUDA_R_16BF:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(f);
      break;
    case CUDA_R_16F:
      static_cast<__half*>(p)[i] = __float2half_rn(f);
      break;
    default:
      static_cast<float*>(p)[i] = f;
  }
}

// One column-major GEMM: C (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta C.
void Gemm(cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, float alpha,
          const void* A, cudaDataType at, int lda, const void* B, cudaDataType bt, int ldb,
          float beta, void* C, cudaDataType ct, int ldc) {
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      double acc = 0;
      for (int l = 0; l < k; ++l) {
        const int64_t a = transa == CUBLAS_OP_N ? i + int64_t{l} * lda : l + int64_t{i} * lda;
        const int64_t b = transb == CUBLAS_OP_N ? l + int64_t{j} * ldb : j + int64_t{l} * ldb;
        acc += Load(A, at, a) * Load(B, bt, b);
      }
      const int64_t c = i + int64_t{j} * ldc;
      // As in cuBLAS, C is not read when beta == 0 (it may hold NaN).
      const double old = beta == 0.0f ? 0.0 : beta * Load(C, ct, c);
      Store(C, ct, c, alpha * acc + old);
    }
  }
}

cublasStatus_t Check(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                     int m, int n, int k, cudaDataType at, int lda, cudaDataType bt, int ldb,
                     cudaDataType ct, int ldc, int batch, cublasComputeType_t compute) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0 || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  if ((transa != CUBLAS_OP_N && transa != CUBLAS_OP_T) ||
      (transb != CUBLAS_OP_N && transb != CUBLAS_OP_T)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const int a_rows = transa == CUBLAS_OP_N ? m : k;
  const int b_rows = transb == CUBLAS_OP_N ? k : n;
  if (lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) || ldc < (m > 1 ? m : 1)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (!SupportedInput(at) || at != bt || !SupportedInput(ct)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (at == CUDA_R_32F && ct != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (at != CUDA_R_32F && ct != CUDA_R_32F && ct != at) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t* stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t) {
  return handle == nullptr ? CUBLAS_STATUS_NOT_INITIALIZED : CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "CUBLAS_STATUS_(simulator: other)";
  }
}
const char* cublasGetStatusString(cublasStatus_t status) { return cublasGetStatusName(status); }

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t) {
  dt_sim::FlushPendingCopies();  // stream order
  const cublasStatus_t s =
      Check(handle, transa, transb, m, n, k, Atype, lda, Btype, ldb, Ctype, ldc, 1, computeType);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  Gemm(transa, transb, m, n, k, *static_cast<const float*>(alpha), A, Atype, lda, B, Btype, ldb,
       *static_cast<const float*>(beta), C, Ctype, ldc);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                          cublasOperation_t transb, int m, int n, int k,
                                          const void* alpha, const void* A, cudaDataType Atype,
                                          int lda, long long int strideA, const void* B,
                                          cudaDataType Btype, int ldb, long long int strideB,
                                          const void* beta, void* C, cudaDataType Ctype, int ldc,
                                          long long int strideC, int batchCount,
                                          cublasComputeType_t computeType, cublasGemmAlgo_t) {
  dt_sim::FlushPendingCopies();  // stream order
  const cublasStatus_t s = Check(handle, transa, transb, m, n, k, Atype, lda, Btype, ldb, Ctype,
                                 ldc, batchCount, computeType);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  for (int b = 0; b < batchCount; ++b) {
    Gemm(transa, transb, m, n, k, *static_cast<const float*>(alpha),
         static_cast<const char*>(A) + b * strideA * ElementSize(Atype), Atype, lda,
         static_cast<const char*>(B) + b * strideB * ElementSize(Btype), Btype, ldb,
         *static_cast<const float*>(beta), static_cast<char*>(C) + b * strideC * ElementSize(Ctype),
         Ctype, ldc);
  }
  return CUBLAS_STATUS_SUCCESS;
}
