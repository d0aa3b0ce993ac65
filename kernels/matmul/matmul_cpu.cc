#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>
#include <vector>

#include "kernels/cast/cast.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/threading.h"
#include "kernels/matmul/matmul.h"

namespace dstrain::kernels {
namespace {

// C = beta · C for an empty product (K == 0), which oneDNN does not accept.
void ScaleOnly(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
  }
}

// Starts out (M, N) from the broadcast bias so that the GEMM can accumulate onto it (one pass, no
// temporary). Returns the beta for that GEMM: 1 with a bias, 0 (overwrite) without.
float FillBias(float* out, const float* bias, int64_t M, int64_t N) {
  if (bias == nullptr) return 0.f;
#pragma omp parallel for if (M * N > (1 << 16))
  for (int64_t i = 0; i < M; ++i) {
    float* row = out + i * N;
    for (int64_t j = 0; j < N; ++j) row[j] = bias[j];
  }
  return 1.f;
}

// dbias (N) += column sums of dout (M, N), split over column blocks so that every thread owns its
// outputs (deterministic). Each column adds its rows in order; full blocks get a loop of constant
// length, which the compiler vectorises (at -O2 it leaves loops of unknown length scalar).
void AccumulateColumnSums(float* dbias, const float* dout, int64_t M, int64_t N) {
  constexpr int64_t kBlock = 64;
#pragma omp parallel for if (M * N > (1 << 16))
  for (int64_t j0 = 0; j0 < N; j0 += kBlock) {
    const int64_t width = N - j0 < kBlock ? N - j0 : kBlock;
    float acc[kBlock] = {};
    for (int64_t i = 0; i < M; ++i) {
      const float* row = dout + i * N + j0;
      if (width == kBlock) {
        for (int64_t j = 0; j < kBlock; ++j) acc[j] += row[j];
      } else {
        for (int64_t j = 0; j < width; ++j) acc[j] += row[j];
      }
    }
    for (int64_t j = 0; j < width; ++j) dbias[j0 + j] += acc[j];
  }
}

// ---- GEMM through oneDNN's matmul primitive (bf16, and fp32 forward layers) -------------------
//
// A primitive is made for one shape, layout, alpha, beta and bias-or-not; making it (choosing and
// generating a kernel) costs far more than a small GEMM, so each thread keeps the primitives it
// made. oneDNN's own primitive cache would also find them, but only after building a primitive
// descriptor per call. A training step uses a handful of shapes, so the cache is tiny; when a
// caller cycles through more, the whole cache is dropped rather than tracking recency.

struct GemmKey {
  bool trans_a, trans_b;
  int64_t M, N, K, lda, ldb, ldc;
  float alpha, beta;
  bool bias;         // C = A·B + bias (N) broadcast over rows; only with alpha 1 and beta 0
  bool f32 = false;  // A and B in fp32 instead of bf16
  bool operator==(const GemmKey& o) const {
    return trans_a == o.trans_a && trans_b == o.trans_b && M == o.M && N == o.N && K == o.K &&
           lda == o.lda && ldb == o.ldb && ldc == o.ldc && alpha == o.alpha && beta == o.beta &&
           bias == o.bias && f32 == o.f32;
  }
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& k) const {
    size_t h = (k.trans_a ? 1 : 0) | (k.trans_b ? 2 : 0) | (k.bias ? 4 : 0) | (k.f32 ? 8 : 0);
    for (int64_t v : {k.M, k.N, k.K, k.lda, k.ldb, k.ldc}) {
      h = h * 1000003u ^ static_cast<size_t>(v);
    }
    return h;
  }
};

struct GemmPrimitive {
  bool native = false;  // false: oneDNN has no matmul for this case (see GemmBf16ViaSgemm)
  dnnl::memory::desc a, b, bias, c;
  dnnl::matmul matmul;
};

constexpr size_t kMaxCachedPrimitives = 64;

const dnnl::engine& CpuEngine() {
  // Never destroyed: thread-local streams and primitives made from it may outlive statics.
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

GemmPrimitive MakeGemm(const GemmKey& k) {
  using dims = dnnl::memory::dims;
  using dt = dnnl::memory::data_type;
  // Row-major with a row stride; a transposed operand is the same storage read with the strides
  // swapped, which oneDNN's kernels handle without a copy of the caller's data.
  GemmPrimitive g;
  const dt in = k.f32 ? dt::f32 : dt::bf16;
  g.a = dnnl::memory::desc({k.M, k.K}, in, k.trans_a ? dims{1, k.lda} : dims{k.lda, 1});
  g.b = dnnl::memory::desc({k.K, k.N}, in, k.trans_b ? dims{1, k.ldb} : dims{k.ldb, 1});
  g.c = dnnl::memory::desc({k.M, k.N}, dt::f32, dims{k.ldc, 1});
  dnnl::primitive_attr attr;
  if (k.alpha != 1.f) attr.set_output_scales(0, {k.alpha});
  if (k.beta != 0.f) {
    // C = alpha · A·B + beta · C: the sum post-op adds beta times what dst held before.
    dnnl::post_ops ops;
    ops.append_sum(k.beta);
    attr.set_post_ops(ops);
  }
  // The bias is added as the kernel writes its results: no separate pass over C.
  if (k.bias) g.bias = dnnl::memory::desc({1, k.N}, dt::f32, dims{k.N, 1});
  try {
    const dnnl::matmul::desc desc =
        k.bias ? dnnl::matmul::desc(g.a, g.b, g.bias, g.c) : dnnl::matmul::desc(g.a, g.b, g.c);
    g.matmul = dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, CpuEngine()));
    g.native = true;
  } catch (const dnnl::error& e) {
    if (e.status != dnnl_unimplemented) throw;
  }
  return g;
}

const GemmPrimitive& CachedGemm(const GemmKey& key) {
  thread_local std::unordered_map<GemmKey, GemmPrimitive, GemmKeyHash> cache;
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  if (cache.size() >= kMaxCachedPrimitives) cache.clear();
  return cache.emplace(key, MakeGemm(key)).first->second;
}

// Copies a bf16 matrix (rows, cols) with row stride ld into dense fp32 (exact).
void WidenRows(float* dst, const uint16_t* src, int64_t rows, int64_t cols, int64_t ld) {
  if (ld == cols) {
    HalfToFloat(DType::kBF16, dst, src, rows * cols);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    HalfToFloat(DType::kBF16, dst + r * cols, src + r * ld, cols);
  }
}

// Without AVX512_BF16, oneDNN 2.6 has no bf16 matmul at all on AVX2 CPUs, and on AVX-512 ones it
// emulates one at about a third of the fp32 rate (70 against 200 GFLOP/s, measured here with its
// ISA capped to AVX512_CORE). A product of two bf16 values is exact in fp32, so widening the
// operands and calling Sgemm gives the same products with the same fp32 accumulation, at the fp32
// rate (0.99x measured) plus one pass over the operands. The fp32 copies are per-thread and
// grow-only (not ThreadScratch, which Matmul*Bf16 hold during the call).
void GemmBf16ViaSgemm(const GemmKey& k, const uint16_t* A, const uint16_t* B, const float* bias,
                      float* C) {
  thread_local std::vector<float> a32, b32;
  const int64_t a_rows = k.trans_a ? k.K : k.M, a_cols = k.trans_a ? k.M : k.K;
  const int64_t b_rows = k.trans_b ? k.N : k.K, b_cols = k.trans_b ? k.K : k.N;
  if (static_cast<int64_t>(a32.size()) < a_rows * a_cols) a32.resize(a_rows * a_cols);
  if (static_cast<int64_t>(b32.size()) < b_rows * b_cols) b32.resize(b_rows * b_cols);
  WidenRows(a32.data(), A, a_rows, a_cols, k.lda);
  WidenRows(b32.data(), B, b_rows, b_cols, k.ldb);
  const float beta = bias != nullptr ? FillBias(C, bias, k.M, k.N) : k.beta;  // ldc == N then
  Sgemm(k.trans_a, k.trans_b, k.M, k.N, k.K, k.alpha, a32.data(), a_cols, b32.data(), b_cols, beta,
        C, k.ldc);
}

// oneDNN's bf16 kernels only where the CPU has AVX512_BF16, and not when DSTRAIN_MAX_ISA (or
// ScopedMaxIsa) rules out the AVX-512 kernels: the cap then stands for a CPU without them.
bool UseOneDnnBf16() { return GetCpuFeatures().avx512bf16 && ActiveIsa() == Isa::kAvx512; }

[[noreturn]] void DnnlFailure(const dnnl::error& e, const GemmKey& k) {
  // Only reachable with inconsistent shapes or strides, which callers validate, or when oneDNN
  // cannot allocate: a true invariant, as for dnnl_sgemm below.
  std::fprintf(stderr, "oneDNN %s matmul failed: %s (status %d) M=%ld N=%ld K=%ld\n",
               k.f32 ? "fp32" : "bf16", e.what(), static_cast<int>(e.status),
               static_cast<long>(k.M), static_cast<long>(k.N), static_cast<long>(k.K));
  std::abort();
}

// Runs a native primitive on this thread's OpenMP pool, like dnnl_sgemm. A stream per thread:
// oneDNN streams are not meant to be shared between threads.
void Execute(const GemmPrimitive& g, const void* A, const void* B, const float* bias, float* C) {
  thread_local dnnl::stream stream(CpuEngine());
  dnnl::memory a(g.a, CpuEngine(), const_cast<void*>(A));
  dnnl::memory b(g.b, CpuEngine(), const_cast<void*>(B));
  dnnl::memory c(g.c, CpuEngine(), C);
  std::unordered_map<int, dnnl::memory> args = {
      {DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
  if (bias != nullptr) {
    args.emplace(DNNL_ARG_BIAS, dnnl::memory(g.bias, CpuEngine(), const_cast<float*>(bias)));
  }
  g.matmul.execute(stream, args);
  stream.wait();
}

// GemmBf16 with an optional bias (N) added to every row of C; bias needs alpha 1, beta 0 and
// ldc == N. Requires M, N, K > 0.
void GemmBf16Impl(const GemmKey& key, const uint16_t* A, const uint16_t* B, const float* bias,
                  float* C) {
  if (!UseOneDnnBf16()) {
    GemmBf16ViaSgemm(key, A, B, bias, C);
    return;
  }
  try {
    const GemmPrimitive& g = CachedGemm(key);
    if (!g.native) {
      GemmBf16ViaSgemm(key, A, B, bias, C);
      return;
    }
    Execute(g, A, B, bias, C);
  } catch (const dnnl::error& e) {
    DnnlFailure(e, key);
  }
}

// bf16 copies of fp32 operands live in the calling thread's scratch (threading.h): no allocation
// after the first call of a size. Each copy starts on a 64-byte boundary.
constexpr int64_t kScratchAlign = 32;  // elements (bf16 or, where fp32 copies, floats)

int64_t AlignUp(int64_t n) { return (n + kScratchAlign - 1) / kScratchAlign * kScratchAlign; }

uint16_t* Bf16Scratch(int64_t elements) {
  static_assert(sizeof(float) == 2 * sizeof(uint16_t));
  return reinterpret_cast<uint16_t*>(ThreadScratch((elements + 1) / 2));
}

}  // namespace

namespace {

void CallSgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
               int64_t ldc) {
  dnnl_status_t s = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B,
                               ldb, beta, C, ldc);
  if (s != dnnl_success) {
    // Only reachable with inconsistent shapes, which callers validate: a true invariant.
    std::fprintf(stderr, "dnnl_sgemm failed (status %d) M=%ld N=%ld K=%ld\n", static_cast<int>(s),
                 static_cast<long>(M), static_cast<long>(N), static_cast<long>(K));
    std::abort();
  }
}

// A row stride of a multiple of 512 floats (2 KiB: 1024 features, an 8192 vocabulary) puts the
// rows a transposed-A product reads together into a few cache sets, and oneDNN's sgemm then runs at
// about half its rate: a weight gradient dYᵀ·X with 2048 rows runs at 65-75 GFLOP/s against
// 130-150 with padded strides when dY has 1024 or 8192 columns, and at 89 when X has 1024 (two Zen
// 3 cores; kernels/README.md, "GEMM strides"). Such products run in slices of the reduction
// dimension, each slice of the aliasing operand(s) copied to a scratch with a padded stride first;
// the copy costs about 7% of the product.
constexpr int64_t kAliasingStride = 512;     // floats
constexpr int64_t kPaddedStrideExtra = 16;   // floats: one 64-byte line
constexpr int64_t kSliceRows = 256;          // rows of the reduction dimension per slice
constexpr int64_t kMinPaddedWork = 1 << 22;  // M·N·K below which the copy is not worth it

bool Aliases(int64_t ld) { return ld % kAliasingStride == 0; }

// Copies rows [0, rows) of src (row stride ld, cols wide) to dst with row stride cols + padding.
void CopyRowsPadded(float* dst, const float* src, int64_t rows, int64_t cols, int64_t ld) {
  const int64_t dst_ld = cols + kPaddedStrideExtra;
#pragma omp parallel for if (rows * cols > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * dst_ld, src + r * ld, cols * sizeof(float));
  }
}

// C = alpha · Aᵀ·op(B) + beta · C with A (K, M) or B (K, N) at an aliasing stride (see
// kAliasingStride); whichever aliases is copied. The slices are always the same for a shape, so the
// result is as deterministic as one call.
void SgemmTransposedAPadded(bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                            const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                            float* C, int64_t ldc) {
  // op(B) = B (K, N): its rows are the reduction too, so a slice of B is rows of B; with trans_b
  // (B is (N, K)) a slice of B is a column block, read in place.
  const bool pad_a = Aliases(lda), pad_b = !trans_b && Aliases(ldb);
  thread_local std::vector<float> a_slice, b_slice;  // grow-only, per calling thread
  const int64_t a_ld = M + kPaddedStrideExtra, b_ld = N + kPaddedStrideExtra;
  const int64_t slice = std::min(kSliceRows, K);
  if (pad_a && static_cast<int64_t>(a_slice.size()) < slice * a_ld) a_slice.resize(slice * a_ld);
  if (pad_b && static_cast<int64_t>(b_slice.size()) < slice * b_ld) b_slice.resize(slice * b_ld);
  for (int64_t k0 = 0; k0 < K; k0 += slice) {
    const int64_t rows = std::min(slice, K - k0);
    const float* a = A + k0 * lda;
    int64_t a_stride = lda;
    if (pad_a) {
      CopyRowsPadded(a_slice.data(), a, rows, M, lda);
      a = a_slice.data();
      a_stride = a_ld;
    }
    const float* b = trans_b ? B + k0 : B + k0 * ldb;
    int64_t b_stride = ldb;
    if (pad_b) {
      CopyRowsPadded(b_slice.data(), b, rows, N, ldb);
      b = b_slice.data();
      b_stride = b_ld;
    }
    CallSgemm(true, trans_b, M, N, rows, alpha, a, a_stride, b, b_stride, k0 == 0 ? beta : 1.f, C,
              ldc);
  }
}

}  // namespace

void Sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    ScaleOnly(M, N, beta, C, ldc);
    return;
  }
  if (trans_a && (Aliases(lda) || (!trans_b && Aliases(ldb))) && M * N * K >= kMinPaddedWork) {
    SgemmTransposedAPadded(trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  CallSgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void GemmBf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
              int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    ScaleOnly(M, N, beta, C, ldc);
    return;
  }
  GemmBf16Impl({trans_a, trans_b, M, N, K, lda, ldb, ldc, alpha, beta, /*bias=*/false}, A, B,
               nullptr, C);
}

namespace {

// With AVX-512, oneDNN's fp32 matmul primitive (its brgemm kernels, bias added as results are
// written) ran the forward layers faster than FillBias plus dnnl_sgemm: BM_MatmulForward at M 4096,
// (K, N) = (256, 768), (256, 1024), (1024, 256), (256, 8192), two alternating runs each,
// 285/297, 293/300, 298/301, 250/271 GFLOP/s against 259/267, 267/283, 243/250, 250/256 before
// (at fc49125); two Xeon cores with AVX-512 and AMX, 2026-12-08. The C = 768 shapes were not
// measured. Elsewhere, and for the backward products (no gain there), dnnl_sgemm as before.
// Returns false where it does not apply (another ISA, an empty product, or a primitive oneDNN
// does not implement natively: in practice never for fp32).
bool ForwardThroughPrimitive(float* out, const float* inp, const float* weight, const float* bias,
                             int64_t M, int64_t K, int64_t N) {
  if (ActiveIsa() != Isa::kAvx512 || M == 0 || N == 0 || K == 0) return false;
  GemmKey key{/*trans_a=*/false, /*trans_b=*/true, M, N, K, K, K, N, 1.f, 0.f,
              bias != nullptr};
  key.f32 = true;
  try {
    const GemmPrimitive& g = CachedGemm(key);
    if (!g.native) return false;
    Execute(g, inp, weight, bias, out);
  } catch (const dnnl::error& e) {
    DnnlFailure(e, key);
  }
  return true;
}

}  // namespace

void MatmulForward(float* out, const float* inp, const float* weight, const float* bias, int64_t M,
                   int64_t K, int64_t N) {
  if (ForwardThroughPrimitive(out, inp, weight, bias, M, K, N)) return;
  const float beta = FillBias(out, bias, M, N);
  Sgemm(/*trans_a=*/false, /*trans_b=*/true, M, N, K, 1.f, inp, K, weight, K, beta, out, N);
}

void MatmulBackward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                    const float* weight, int64_t M, int64_t K, int64_t N, bool accumulate_dinp,
                    bool accumulate_dweight) {
  if (dinp != nullptr) {
    Sgemm(false, false, M, K, N, 1.f, dout, N, weight, K, accumulate_dinp ? 1.f : 0.f, dinp, K);
  }
  if (dweight != nullptr) {
    Sgemm(true, false, N, K, M, 1.f, dout, N, inp, K, accumulate_dweight ? 1.f : 0.f, dweight, K);
  }
  if (dbias != nullptr) AccumulateColumnSums(dbias, dout, M, N);
}

namespace {

// Without oneDNN's bf16 kernels (UseOneDnnBf16), the Matmul*Bf16 functions multiply in fp32 the
// fp32 values of the rounded operands: RoundToHalf turns an fp32 operand into those values in one
// pass, where rounding to bf16 storage and widening it again for GemmBf16 would take two, and
// the backward rounds dout once for both of its products. Products of bf16 values are exact in
// fp32, so the results are the bits GemmBf16 gives on such a CPU (the same Sgemm calls on the
// same values).
//
// Every operand below comes as fp32 (x, rounded here) or already in bf16 (x16, the other null).
//
// dst (n) = the fp32 values of the operand in bf16: x16 widened, or x rounded.
void RoundedValues(float* dst, const float* x, const uint16_t* x16, int64_t n) {
  if (x16 != nullptr) {
    HalfToFloat(DType::kBF16, dst, x16, n);
  } else {
    RoundToHalf(DType::kBF16, dst, x, n);
  }
}

// MatmulForwardBf16 this way.
void ForwardRounded(float* out, const float* inp, const uint16_t* inp16, const float* weight,
                    const uint16_t* weight16, const float* bias, int64_t M, int64_t K, int64_t N) {
  float* inp32 = ThreadScratch(AlignUp(M * K) + N * K);
  float* weight32 = inp32 + AlignUp(M * K);
  RoundedValues(inp32, inp, inp16, M * K);
  RoundedValues(weight32, weight, weight16, N * K);
  const float beta = FillBias(out, bias, M, N);
  Sgemm(/*trans_a=*/false, /*trans_b=*/true, M, N, K, 1.f, inp32, K, weight32, K, beta, out, N);
}

// dout's bf16 operand for the products (cast into out16, or rounded into out32), and dbias (if
// any) += its column sums, from the fp32 dout as in MatmulBackward: one pass over dout for both.
void RoundDout(uint16_t* out16, float* out32, float* dbias, const float* dout, int64_t M,
               int64_t N) {
  if (dbias != nullptr) {
    CastWithColumnSums(DType::kBF16, out16, out32, dbias, dout, M, N);
  } else if (out16 != nullptr) {
    FloatToHalf(DType::kBF16, out16, dout, M * N);
  } else {
    RoundToHalf(DType::kBF16, out32, dout, M * N);
  }
}

// MatmulBackwardBf16's products this way: the rounded operands' fp32 values, only those of the
// products asked for (dinp, dweight: at least one), dout rounded once for both (and summed into
// dbias on the way).
void BackwardRounded(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const uint16_t* inp16, const float* weight, const uint16_t* weight16,
                     int64_t M, int64_t K, int64_t N, bool accumulate_dinp,
                     bool accumulate_dweight) {
  const int64_t dout_size = AlignUp(M * N);
  const int64_t weight_size = dinp != nullptr ? AlignUp(N * K) : 0;
  const int64_t inp_size = dweight != nullptr ? M * K : 0;
  float* dout32 = ThreadScratch(dout_size + weight_size + inp_size);
  float* weight32 = dout32 + dout_size;
  float* inp32 = weight32 + weight_size;
  RoundDout(nullptr, dout32, dbias, dout, M, N);
  if (dinp != nullptr) {
    RoundedValues(weight32, weight, weight16, N * K);
    Sgemm(false, false, M, K, N, 1.f, dout32, N, weight32, K, accumulate_dinp ? 1.f : 0.f, dinp, K);
  }
  if (dweight != nullptr) {
    RoundedValues(inp32, inp, inp16, M * K);
    Sgemm(true, false, N, K, M, 1.f, dout32, N, inp32, K, accumulate_dweight ? 1.f : 0.f, dweight,
          K);
  }
}

// The bf16 forward: the operands not yet in bf16 rounded into per-thread scratch.
void ForwardBf16(float* out, const float* inp, const uint16_t* inp16, const float* weight,
                 const uint16_t* weight16, const float* bias, int64_t M, int64_t K, int64_t N) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty product: out is the bias, or zeros
    if (FillBias(out, bias, M, N) == 0.f) ScaleOnly(M, N, 0.f, out, N);
    return;
  }
  if (!UseOneDnnBf16()) {
    ForwardRounded(out, inp, inp16, weight, weight16, bias, M, K, N);
    return;
  }
  const int64_t inp_size = inp16 == nullptr ? AlignUp(M * K) : 0;
  const int64_t weight_size = weight16 == nullptr ? N * K : 0;
  uint16_t* scratch = Bf16Scratch(inp_size + weight_size);
  if (inp16 == nullptr) {
    FloatToHalf(DType::kBF16, scratch, inp, M * K);
    inp16 = scratch;
  }
  if (weight16 == nullptr) {
    FloatToHalf(DType::kBF16, scratch + inp_size, weight, N * K);
    weight16 = scratch + inp_size;
  }
  GemmBf16Impl({/*trans_a=*/false, /*trans_b=*/true, M, N, K, K, K, N, 1.f, 0.f, bias != nullptr},
               inp16, weight16, bias, out);
}

// The bf16 backward likewise.
void BackwardBf16(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                  const uint16_t* inp16, const float* weight, const uint16_t* weight16, int64_t M,
                  int64_t K, int64_t N, bool accumulate_dinp, bool accumulate_dweight) {
  if (dinp == nullptr && dweight == nullptr) {
    // Sums, not products: from the fp32 gradient, as in MatmulBackward.
    if (dbias != nullptr) AccumulateColumnSums(dbias, dout, M, N);
  } else if (!UseOneDnnBf16()) {
    BackwardRounded(dinp, dweight, dbias, dout, inp, inp16, weight, weight16, M, K, N,
                    accumulate_dinp, accumulate_dweight);
  } else {
    // Only the operands of the products asked for are rounded.
    const bool round_weight = dinp != nullptr && weight16 == nullptr;
    const bool round_inp = dweight != nullptr && inp16 == nullptr;
    const int64_t dout_size = AlignUp(M * N);
    const int64_t weight_size = round_weight ? AlignUp(N * K) : 0;
    const int64_t inp_size = round_inp ? M * K : 0;
    uint16_t* dout16 = Bf16Scratch(dout_size + weight_size + inp_size);
    uint16_t* rounded_weight = dout16 + dout_size;
    uint16_t* rounded_inp = rounded_weight + weight_size;
    RoundDout(dout16, nullptr, dbias, dout, M, N);
    if (dinp != nullptr) {
      if (round_weight) {
        FloatToHalf(DType::kBF16, rounded_weight, weight, N * K);
        weight16 = rounded_weight;
      }
      GemmBf16(false, false, M, K, N, 1.f, dout16, N, weight16, K, accumulate_dinp ? 1.f : 0.f,
               dinp, K);
    }
    if (dweight != nullptr) {
      if (round_inp) {
        FloatToHalf(DType::kBF16, rounded_inp, inp, M * K);
        inp16 = rounded_inp;
      }
      GemmBf16(true, false, N, K, M, 1.f, dout16, N, inp16, K, accumulate_dweight ? 1.f : 0.f,
               dweight, K);
    }
  }
}

}  // namespace

void MatmulForwardBf16(float* out, const float* inp, const float* weight, const float* bias,
                       int64_t M, int64_t K, int64_t N) {
  ForwardBf16(out, inp, nullptr, weight, nullptr, bias, M, K, N);
}

void MatmulForwardBf16(float* out, const float* inp, const uint16_t* weight16, const float* bias,
                       int64_t M, int64_t K, int64_t N) {
  ForwardBf16(out, inp, nullptr, nullptr, weight16, bias, M, K, N);
}

void MatmulForwardBf16(float* out, const uint16_t* inp16, const float* weight, const float* bias,
                       int64_t M, int64_t K, int64_t N) {
  ForwardBf16(out, nullptr, inp16, weight, nullptr, bias, M, K, N);
}

void MatmulForwardBf16(float* out, const uint16_t* inp16, const uint16_t* weight16,
                       const float* bias, int64_t M, int64_t K, int64_t N) {
  ForwardBf16(out, nullptr, inp16, nullptr, weight16, bias, M, K, N);
}

void MatmulBackwardBf16(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, int64_t M, int64_t K, int64_t N,
                        bool accumulate_dinp, bool accumulate_dweight) {
  BackwardBf16(dinp, dweight, dbias, dout, inp, nullptr, weight, nullptr, M, K, N, accumulate_dinp,
               accumulate_dweight);
}

void MatmulBackwardBf16(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const uint16_t* weight16, int64_t M, int64_t K, int64_t N,
                        bool accumulate_dinp, bool accumulate_dweight) {
  BackwardBf16(dinp, dweight, dbias, dout, inp, nullptr, nullptr, weight16, M, K, N,
               accumulate_dinp, accumulate_dweight);
}

void MatmulBackwardBf16(float* dinp, float* dweight, float* dbias, const float* dout,
                        const uint16_t* inp16, const float* weight, int64_t M, int64_t K, int64_t N,
                        bool accumulate_dinp, bool accumulate_dweight) {
  BackwardBf16(dinp, dweight, dbias, dout, nullptr, inp16, weight, nullptr, M, K, N,
               accumulate_dinp, accumulate_dweight);
}

void MatmulBackwardBf16(float* dinp, float* dweight, float* dbias, const float* dout,
                        const uint16_t* inp16, const uint16_t* weight16, int64_t M, int64_t K,
                        int64_t N, bool accumulate_dinp, bool accumulate_dweight) {
  BackwardBf16(dinp, dweight, dbias, dout, nullptr, inp16, nullptr, weight16, M, K, N,
               accumulate_dinp, accumulate_dweight);
}

}  // namespace dstrain::kernels
