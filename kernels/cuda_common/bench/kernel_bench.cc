// Times every CUDA kernel of dstrain at GPT-2 (124M) training shapes and checks each result
// against a float64 CPU reference, then prints one table, last:
//   kernel | shape | time | throughput (GB/s of compulsory traffic, or TFLOP/s) | max error
// The error column is the largest absolute difference from the float64 reference over the
// outputs it checks (sampled rows or elements where the reference would be slow; "bitwise" where
// the result must be exact). Inputs come from a fixed-seed generator. Each kernel runs once for
// the check, then warms up and is timed over several launches with CUDA events (mean per launch).
//
// Usage: kernel_bench [--quick | --once] [--tiny]
//   --quick: 5 timed launches per kernel instead of 20 (--once: 1, no warm-up)
//   --tiny:  toy shapes, for the CPU simulator build (kernel_bench_sim)
// Exits 1 (after printing what ran) if a kernel fails or no CUDA device is present.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "kernels/adamw/adamw_reference.h"
#include "kernels/adamw/cuda/adamw_cuda.h"
#include "kernels/attention/attention_reference.h"
#include "kernels/attention/cuda/attention_cuda.h"
#include "kernels/cast/cuda/cast_cuda.h"
#include "kernels/crossentropy/crossentropy_reference.h"
#include "kernels/crossentropy/cuda/crossentropy_cuda.h"
#include "kernels/cuda_common/device.h"
#include "kernels/encoder/cuda/encoder_cuda.h"
#include "kernels/encoder/encoder_reference.h"
#include "kernels/gelu/cuda/gelu_cuda.h"
#include "kernels/gelu/gelu_reference.h"
#include "kernels/layernorm/cuda/layernorm_cuda.h"
#include "kernels/layernorm/layernorm_reference.h"
#include "kernels/matmul/cuda/matmul_cuda.h"
#include "kernels/precision/cuda/precision_cuda.h"
#include "kernels/residual/cuda/residual_cuda.h"
#include "kernels/residual/residual_reference.h"

namespace dstrain::kernels::gpu {
namespace {

// The shapes: GPT-2 small with micro-batch 8 x 1024 tokens, or (--tiny) a toy model that the CPU
// simulator build (kernel_bench_sim) runs in seconds.
struct Shapes {
  int B = 8, T = 1024, C = 768, NH = 12, V = 50257, Vp = 50304;
  int64_t params = 124439808;  // GPT-2 small's parameter count
};
Shapes g_shapes;

struct Row {
  std::string kernel, shape, time, throughput, error;
};

std::vector<Row> g_rows;  // the table (this binary's only global: it is a script)
bool g_failed = false;
int g_iters = 20;

// Fixed-seed uniform floats in [lo, hi) from a 64-bit xorshift (fast enough for 10^8 values).
std::vector<float> Random(int64_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::vector<float> v(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& f : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f = lo + (hi - lo) * static_cast<float>(x >> 40) * (1.0f / 16777216.0f);
  }
  return v;
}

std::vector<int32_t> RandomInts(int64_t n, uint64_t seed, int32_t bound) {
  std::vector<int32_t> v(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;
  for (auto& i : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    i = static_cast<int32_t>((x >> 11) % static_cast<uint64_t>(bound));
  }
  return v;
}

std::vector<double> ToDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Dies with a message on a CUDA error outside the kernels under test (allocation, copies).
void Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

template <typename T>
class Buffer {
 public:
  explicit Buffer(int64_t n) : n_(n) {
    Check(cudaMalloc(reinterpret_cast<void**>(&p_), std::max<int64_t>(n, 1) * sizeof(T)),
          "cudaMalloc");
    Check(cudaMemset(p_, 0, n * sizeof(T)), "cudaMemset");
  }
  explicit Buffer(const std::vector<T>& host) : Buffer(static_cast<int64_t>(host.size())) {
    Upload(host);
  }
  ~Buffer() { cudaFree(p_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() const { return p_; }
  void Upload(const std::vector<T>& host) {
    Check(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<T> Download() const {
    std::vector<T> host(n_);
    Check(cudaDeviceSynchronize(), "synchronize");
    Check(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return host;
  }

 private:
  int64_t n_;
  T* p_ = nullptr;
};

// Runs `op` once (it must succeed), then times g_iters launches after up to 3 warm-ups. Returns
// microseconds per launch, or -1 after recording a failure.
double TimeUs(const std::string& name, const std::function<absl::Status()>& op) {
  absl::Status s = op();
  if (!s.ok()) {
    std::fprintf(stderr, "%s failed: %s\n", name.c_str(), s.ToString().c_str());
    g_failed = true;
    return -1;
  }
  for (int i = 0; i < std::min(3, g_iters - 1); ++i) s.Update(op());
  cudaEvent_t start, stop;
  Check(cudaEventCreate(&start), "cudaEventCreate");
  Check(cudaEventCreate(&stop), "cudaEventCreate");
  Check(cudaEventRecord(start, nullptr), "cudaEventRecord");
  for (int i = 0; i < g_iters; ++i) s.Update(op());
  Check(cudaEventRecord(stop, nullptr), "cudaEventRecord");
  Check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0;
  Check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (!s.ok()) {
    std::fprintf(stderr, "%s failed while timing: %s\n", name.c_str(), s.ToString().c_str());
    g_failed = true;
    return -1;
  }
  return 1000.0 * ms / g_iters;
}

std::string Err(double e) { return absl::StrFormat("%.2e", e); }

void Add(const std::string& kernel, const std::string& shape, double us, double bytes, double flops,
         const std::string& error) {
  Row r{kernel, shape, us < 0 ? "FAILED" : absl::StrFormat("%.1f us", us), "", error};
  if (us > 0 && flops > 0) r.throughput = absl::StrFormat("%.1f TFLOP/s", flops / us * 1e-6);
  if (us > 0 && bytes > 0) r.throughput = absl::StrFormat("%.0f GB/s", bytes / us * 1e-3);
  g_rows.push_back(r);
  std::fprintf(stderr, "  done: %s %s\n", kernel.c_str(), r.time.c_str());
}

double MaxAbsErr(const float* got, const double* want, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = std::fabs(got[i] - want[i]);
    if (!(e <= m)) m = e;  // NaN sticks
  }
  return m;
}

// Indices of `count` rows spread over [0, rows).
std::vector<int64_t> SampleRows(int64_t rows, int count) {
  std::vector<int64_t> idx;
  for (int i = 0; i < count; ++i) idx.push_back((rows - 1) * i / std::max(1, count - 1));
  return idx;
}

void BenchEncoder() {
  const Shapes& sh = g_shapes;
  [[maybe_unused]] const int B = sh.B, T = sh.T, C = sh.C, NH = sh.NH, V = sh.V, Vp = sh.Vp;
  [[maybe_unused]] const int64_t BT = int64_t{B} * T, P = sh.params;
  const auto tokens = RandomInts(BT, 1, V);
  const auto wte = Random(int64_t{Vp} * C, 2), wpe = Random(int64_t{T} * C, 3);
  const auto dout = Random(BT * C, 4);
  Buffer<int32_t> d_tokens(tokens);
  Buffer<float> d_wte(wte), d_wpe(wpe), out(BT * C), d_dout(dout), dwte(int64_t{Vp} * C),
      dwpe(int64_t{T} * C);
  const std::string shape = absl::StrFormat("B=%d T=%d C=%d", B, T, C);
  // forward
  std::vector<double> want(BT * C);
  EncoderForwardReference(want.data(), tokens.data(), ToDouble(wte).data(), ToDouble(wpe).data(), B,
                          T, C);
  double us = TimeUs("encoder forward", [&] {
    return EncoderForward(out.get(), d_tokens.get(), d_wte.get(), d_wpe.get(), B, T, C, nullptr);
  });
  Add("encoder forward", shape, us, 3.0 * BT * C * 4, 0,
      Err(MaxAbsErr(out.Download().data(), want.data(), BT * C)));
  // backward, checked after one call from zero gradients
  std::vector<double> want_dwte(int64_t{Vp} * C, 0.0), want_dwpe(int64_t{T} * C, 0.0);
  if (!EncoderBackward(dwte.get(), dwpe.get(), d_dout.get(), d_tokens.get(), B, T, C, nullptr)
           .ok()) {
    g_failed = true;
  }
  EncoderBackwardReference(want_dwte.data(), want_dwpe.data(), ToDouble(dout).data(), tokens.data(),
                           B, T, C);
  const double err =
      std::max(MaxAbsErr(dwte.Download().data(), want_dwte.data(), want_dwte.size()),
               MaxAbsErr(dwpe.Download().data(), want_dwpe.data(), want_dwpe.size()));
  us = TimeUs("encoder backward", [&] {
    return EncoderBackward(dwte.get(), dwpe.get(), d_dout.get(), d_tokens.get(), B, T, C, nullptr);
  });
  Add("encoder backward", shape, us, 3.0 * BT * C * 4, 0, Err(err));
}

void BenchLayerNorm() {
  const Shapes& sh = g_shapes;
  [[maybe_unused]] const int B = sh.B, T = sh.T, C = sh.C, NH = sh.NH, V = sh.V, Vp = sh.Vp;
  [[maybe_unused]] const int64_t BT = int64_t{B} * T, P = sh.params;
  const int64_t N = BT;
  const auto x = Random(N * C, 5, 2.f, 4.f), w = Random(C, 6), b = Random(C, 7);
  const auto dout = Random(N * C, 8);
  Buffer<float> d_x(x), d_w(w), d_b(b), out(N * C), mean(N), rstd(N), d_dout(dout), dinp(N * C),
      dw(C), db(C);
  const std::string shape = absl::StrFormat("N=%d C=%d", N, C);
  double us = TimeUs("layernorm forward", [&] {
    return LayerNormForward(out.get(), mean.get(), rstd.get(), d_x.get(), d_w.get(), d_b.get(), N,
                            C, nullptr);
  });
  // Check 64 rows.
  const auto got = out.Download();
  const auto wd = ToDouble(w), bd = ToDouble(b);
  double err = 0;
  for (int64_t r : SampleRows(N, 64)) {
    std::vector<double> row(x.begin() + r * C, x.begin() + (r + 1) * C), o(C);
    double m, s;
    LayerNormForwardReference(o.data(), &m, &s, row.data(), wd.data(), bd.data(), 1, C);
    err = std::max(err, MaxAbsErr(got.data() + r * C, o.data(), C));
  }
  Add("layernorm forward", shape, us, 8.0 * N * C, 0, Err(err));

  // backward: dinp checked on 64 rows after one call from zero; dweight/dbias over all rows
  // (float64 on the CPU: ~6M multiply-adds).
  const auto means = mean.Download(), rstds = rstd.Download();
  if (!LayerNormBackward(dinp.get(), dw.get(), db.get(), d_dout.get(), d_x.get(), d_w.get(),
                         mean.get(), rstd.get(), N, C, nullptr)
           .ok()) {
    g_failed = true;
  }
  const auto got_dinp = dinp.Download(), got_dw = dw.Download(), got_db = db.Download();
  std::vector<double> want_dw(C, 0.0), want_db(C, 0.0);
  err = 0;
  const std::vector<double> xd = ToDouble(x), doutd = ToDouble(dout);
  for (int64_t r = 0; r < N; ++r) {
    const double m = means[r], s = rstds[r];
    std::vector<double> dx(C, 0.0);
    LayerNormBackwardReference(dx.data(), want_dw.data(), want_db.data(), doutd.data() + r * C,
                               xd.data() + r * C, wd.data(), &m, &s, 1, C);
    if (r % 128 == 0) err = std::max(err, MaxAbsErr(got_dinp.data() + r * C, dx.data(), C));
  }
  err = std::max({err, MaxAbsErr(got_dw.data(), want_dw.data(), C),
                  MaxAbsErr(got_db.data(), want_db.data(), C)});
  us = TimeUs("layernorm backward", [&] {
    return LayerNormBackward(dinp.get(), dw.get(), db.get(), d_dout.get(), d_x.get(), d_w.get(),
                             mean.get(), rstd.get(), N, C, nullptr);
  });
  Add("layernorm backward", shape, us, 16.0 * N * C, 0, Err(err));
}

// Float64 rows of out = x·wᵀ (+ b) for the sampled rows.
double MatmulRowsErr(const std::vector<float>& got, const std::vector<float>& x,
                     const std::vector<float>& w, const std::vector<float>* b, int64_t M, int64_t K,
                     int64_t N) {
  double err = 0;
  for (int64_t i : SampleRows(M, 32)) {
    for (int64_t j = 0; j < N; ++j) {
      double acc = b ? (*b)[j] : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += double(x[i * K + k]) * w[j * K + k];
      err = std::max(err, std::fabs(got[i * N + j] - acc));
    }
  }
  return err;
}

void BenchMatmul() {
  const Shapes& sh = g_shapes;
  [[maybe_unused]] const int B = sh.B, T = sh.T, C = sh.C, NH = sh.NH, V = sh.V, Vp = sh.Vp;
  [[maybe_unused]] const int64_t BT = int64_t{B} * T, P = sh.params;
  const int64_t M = BT, K = C, N = 3 * C;  // the qkv projection
  const std::string shape = absl::StrFormat("M=%d K=%d N=%d", M, K, N);
  const double flops = 2.0 * M * N * K;
  const auto x = Random(M * K, 9), w = Random(N * K, 10), b = Random(N, 11);
  const auto dy = Random(M * N, 12);
  Buffer<float> d_x(x), d_w(w), d_b(b), out(M * N), d_dy(dy), dx(M * K), dw(N * K), db(N);
  auto ctx = CublasContext::Create(nullptr);
  auto tf32 = CublasContext::Create(nullptr, CublasContext::Options{.allow_tf32 = true});
  if (!ctx.ok() || !tf32.ok()) {
    std::fprintf(stderr, "cuBLAS: %s\n", ctx.status().ToString().c_str());
    g_failed = true;
    return;
  }
  double us = TimeUs("matmul forward fp32", [&] {
    return MatmulForward(**ctx, out.get(), d_x.get(), d_w.get(), d_b.get(), M, K, N);
  });
  Add("matmul forward fp32", shape, us, 0, flops,
      Err(MatmulRowsErr(out.Download(), x, w, &b, M, K, N)));
  us = TimeUs("matmul forward tf32", [&] {
    return MatmulForward(**tf32, out.get(), d_x.get(), d_w.get(), d_b.get(), M, K, N);
  });
  Add("matmul forward tf32", shape, us, 0, flops,
      Err(MatmulRowsErr(out.Download(), x, w, &b, M, K, N)));

  // bf16: the reference multiplies the bf16-rounded inputs.
  std::vector<__nv_bfloat16> xb(M * K), wb(N * K);
  std::vector<float> xr(M * K), wr(N * K);
  for (int64_t i = 0; i < M * K; ++i) xr[i] = __bfloat162float(xb[i] = __float2bfloat16_rn(x[i]));
  for (int64_t i = 0; i < N * K; ++i) wr[i] = __bfloat162float(wb[i] = __float2bfloat16_rn(w[i]));
  Buffer<__nv_bfloat16> d_xb(xb), d_wb(wb), outb(M * N);
  us = TimeUs("matmul forward bf16", [&] {
    return MatmulForwardBf16(**ctx, outb.get(), d_xb.get(), d_wb.get(), d_b.get(), M, K, N);
  });
  const auto gotb = outb.Download();
  std::vector<float> gotf(gotb.size());
  for (size_t i = 0; i < gotb.size(); ++i) gotf[i] = __bfloat162float(gotb[i]);
  Add("matmul forward bf16", shape, us, 0, flops,
      Err(MatmulRowsErr(gotf, xr, wr, &b, M, K, N)) + " (bf16 out)");

  // backward fp32: dinp (sampled rows) and dbias after one call from zero.
  if (!MatmulBackward(**ctx, dx.get(), dw.get(), db.get(), d_dy.get(), d_x.get(), d_w.get(), M, K,
                      N)
           .ok()) {
    g_failed = true;
  }
  const auto got_dx = dx.Download(), got_db = db.Download();
  double err = 0;
  for (int64_t i : SampleRows(M, 32)) {
    for (int64_t k = 0; k < K; ++k) {
      double acc = 0;
      for (int64_t j = 0; j < N; ++j) acc += double(dy[i * N + j]) * w[j * K + k];
      err = std::max(err, std::fabs(got_dx[i * K + k] - acc));
    }
  }
  for (int64_t j = 0; j < N; ++j) {
    double acc = 0;
    for (int64_t i = 0; i < M; ++i) acc += dy[i * N + j];
    err = std::max(err, std::fabs(got_db[j] - acc));
  }
  us = TimeUs("matmul backward fp32", [&] {
    return MatmulBackward(**ctx, dx.get(), dw.get(), db.get(), d_dy.get(), d_x.get(), d_w.get(), M,
                          K, N);
  });
  Add("matmul backward fp32", shape, us, 0, 2 * flops, Err(err) + " (dinp, dbias)");
}

void BenchAttention() {
  const Shapes& sh = g_shapes;
  [[maybe_unused]] const int B = sh.B, T = sh.T, C = sh.C, NH = sh.NH, V = sh.V, Vp = sh.Vp;
  [[maybe_unused]] const int64_t BT = int64_t{B} * T, P = sh.params;
  const std::string shape = absl::StrFormat("B=%d T=%d C=%d NH=%d", B, T, C, NH);
  const int64_t btc = BT * C, att_n = int64_t{B} * NH * T * T;
  const auto qkv = Random(3 * btc, 13), dout = Random(btc, 14);
  Buffer<float> d_qkv(qkv), d_dout(dout), out(btc), att(att_n), dqkv(3 * btc);
  auto ctx = CublasContext::Create(nullptr);
  if (!ctx.ok()) {
    g_failed = true;
    return;
  }
  const int HS = C / NH;
  const double fwd_flops = 4.0 * B * NH * double(T) * T * HS;  // two T x T x HS GEMMs
  double us = TimeUs("attention forward", [&] {
    return AttentionForward(**ctx, out.get(), att.get(), d_qkv.get(), B, T, C, NH);
  });
  // Reference for batch element 0 (all heads, all positions).
  const auto got_out = out.Download();
  std::vector<double> qkv0(qkv.begin(), qkv.begin() + 3 * T * C), want_out(T * C),
      want_att(int64_t{NH} * T * T), dout0(dout.begin(), dout.begin() + T * C),
      want_dqkv(3 * T * C);
  AttentionForwardReference(want_out.data(), want_att.data(), qkv0.data(), 1, T, C, NH);
  Add("attention forward", shape, us, 0, fwd_flops,
      Err(MaxAbsErr(got_out.data(), want_out.data(), T * C)) + " (b=0)");
  us = TimeUs("attention backward", [&] {
    return AttentionBackward(**ctx, dqkv.get(), d_dout.get(), d_qkv.get(), att.get(), B, T, C, NH);
  });
  AttentionBackwardReference(want_dqkv.data(), dout0.data(), qkv0.data(), want_att.data(), 1, T, C,
                             NH);
  Add("attention backward", shape, us, 0, 2 * fwd_flops,
      Err(MaxAbsErr(dqkv.Download().data(), want_dqkv.data(), 3 * T * C)) + " (b=0)");
}

void BenchGelu() {
  const Shapes& sh = g_shapes;
  [[maybe_unused]] const int B = sh.B, T = sh.T, C = sh.C, NH = sh.NH, V = sh.V, Vp = sh.Vp;
  [[maybe_unused]] const int64_t BT = int64_t{B} * T, P = sh.params;
  const int64_t n = BT * 4 * C;
  const std::string shape = absl::StrFormat("n=%dx%d", BT, 4 * C);
  const auto x = Random(n, 15, -6.f, 6.f), dy = Random(n, 16);
  Buffer<float> d_x(x), d_dy(dy), out(n), dx(n);
  const int64_t m = std::min<int64_t>(n, 1 << 20);  // checked prefix
  double us = TimeUs("gelu forward", [&] { return GeluForward(out.get(), d_x.get(), n, nullptr); });
  std::vector<double> want(m);
  GeluForwardReference(want.data(), ToDouble(std::vector<float>(x.begin(), x.begin() + m)).data(),
                       m);
  Add("gelu forward", shape, us, 8.0 * n, 0, Err(MaxAbsErr(out.Download().data(), want.data(), m)));
  us = TimeUs("gelu backward",
              [&] { return GeluBackward(dx.get(), d_x.get(), d_dy.get(), n, nullptr); });
  GeluBackwardReference(want.data(), ToDouble(std::vector<float>(x.begin(), x.begin() + m)).data(),
                        ToDouble(std::vector<float>(dy.begin(), dy.begin() + m)).data(), m);
  Add("gelu backward", shape, us, 12.0 * n, 0,
      Err(MaxAbsErr(dx.Download().data(), want.data(), m)));
}

void BenchResidual() {
  const Shapes& sh = g_shapes;
  [[maybe_unused]] const int B = sh.B, T = sh.T, C = sh.C, NH = sh.NH, V = sh.V, Vp = sh.Vp;
  [[maybe_unused]] const int64_t BT = int64_t{B} * T, P = sh.params;
  const int64_t n = BT * C;
  const auto a = Random(n, 17), b = Random(n, 18);
  Buffer<float> d_a(a), d_b(b), out(n);
  double us = TimeUs("residual forward",
                     [&] { return ResidualForward(out.get(), d_a.get(), d_b.get(), n, nullptr); });
  std::vector<double> want(n);
  ResidualForwardReference(want.data(), ToDouble(a).data(), ToDouble(b).data(), n);
  Add("residual forward", absl::StrFormat("n=%dx%d", BT, C), us, 12.0 * n, 0,
      Err(MaxAbsErr(out.Download().data(), want.data(), n)));

  const auto g = Random(P, 19);
  Buffer<float> d_g(g);
  Buffer<double> total(1);
  if (!AddSumSquares(total.get(), d_g.get(), P, nullptr).ok()) g_failed = true;
  const double got = total.Download()[0];
  const double want_sum = SumSquaresReference(ToDouble(g).data(), P);
  us = TimeUs("sum of squares", [&] { return AddSumSquares(total.get(), d_g.get(), P, nullptr); });
  Add("sum of squares", absl::StrFormat("n=%.1fM", P / 1e6), us, 4.0 * P, 0,
      absl::StrFormat("%.1e rel", std::fabs(got - want_sum) / want_sum));
}

void BenchCrossEntropy() {
  const Shapes& sh = g_shapes;
  [[maybe_unused]] const int B = sh.B, T = sh.T, C = sh.C, NH = sh.NH, V = sh.V, Vp = sh.Vp;
  [[maybe_unused]] const int64_t BT = int64_t{B} * T, P = sh.params;
  const int64_t N = BT;
  const std::string shape = absl::StrFormat("N=%d V=%d Vp=%d", N, V, Vp);
  const auto z = Random(N * Vp, 20, -4.f, 4.f);
  const auto targets = RandomInts(N, 21, V);
  Buffer<float> d_z(z), losses(N);
  Buffer<int32_t> d_targets(targets);
  const float scale = 1.0f / N;
  if (!CrossEntropyForwardBackward(losses.get(), d_z.get(), d_targets.get(), N, V, Vp, scale,
                                   nullptr)
           .ok()) {
    g_failed = true;
  }
  const auto got_grad = d_z.Download(), got_loss = losses.Download();
  double err = 0;
  for (int64_t r : SampleRows(N, 16)) {
    std::vector<double> row(z.begin() + r * Vp, z.begin() + (r + 1) * Vp), loss(1), grad(Vp);
    CrossEntropyForwardReference(loss.data(), row.data(), &targets[r], 1, V, Vp);
    CrossEntropyBackwardReference(grad.data(), row.data(), &targets[r], 1, V, Vp, scale);
    err = std::max({err, std::fabs(got_loss[r] - loss[0]),
                    MaxAbsErr(got_grad.data() + r * Vp, grad.data(), Vp)});
  }
  // Timed in place on its own output (the values stay finite), like a real step's logits.
  const double us = TimeUs("crossentropy", [&] {
    return CrossEntropyForwardBackward(losses.get(), d_z.get(), d_targets.get(), N, V, Vp, scale,
                                       nullptr);
  });
  Add("crossentropy fwd+bwd", shape, us, 8.0 * N * Vp, 0, Err(err) + " (16 rows)");
}

void BenchAdamW() {
  const Shapes& sh = g_shapes;
  [[maybe_unused]] const int B = sh.B, T = sh.T, C = sh.C, NH = sh.NH, V = sh.V, Vp = sh.Vp;
  [[maybe_unused]] const int64_t BT = int64_t{B} * T, P = sh.params;
  const int64_t n = P;
  const std::string shape = absl::StrFormat("n=%.1fM", P / 1e6);
  const auto p = Random(n, 22), g = Random(n, 23), m = Random(n, 24, -0.1f, 0.1f),
             v = Random(n, 25, 0.f, 0.01f);
  Buffer<float> d_p(p), d_g(g), d_m(m), d_v(v);
  AdamWArgs a;
  a.lr = 6e-4;
  a.weight_decay = 0.1;
  a.bias_correction1 = 1 - std::pow(0.9, 10);
  a.bias_correction2 = 1 - std::pow(0.999, 10);
  if (!AdamWUpdate(d_p.get(), d_g.get(), d_m.get(), d_v.get(), n, a, nullptr).ok()) g_failed = true;
  const auto got_p = d_p.Download();
  const int64_t k = std::min<int64_t>(n, 1 << 20);  // checked prefix
  std::vector<double> pd(p.begin(), p.begin() + k), gd(g.begin(), g.begin() + k),
      md(m.begin(), m.begin() + k), vd(v.begin(), v.begin() + k);
  AdamWUpdateReference(pd.data(), gd.data(), md.data(), vd.data(), k, a);
  double us = TimeUs("adamw fp32", [&] {
    return AdamWUpdate(d_p.get(), d_g.get(), d_m.get(), d_v.get(), n, a, nullptr);
  });
  Add("adamw fp32", shape, us, 28.0 * n, 0, Err(MaxAbsErr(got_p.data(), pd.data(), k)));

  std::vector<__nv_bfloat16> gb(n);
  for (int64_t i = 0; i < n; ++i) gb[i] = __float2bfloat16_rn(g[i]);
  Buffer<__nv_bfloat16> d_gb(gb), d_pb(n);
  d_p.Upload(p);
  d_m.Upload(m);
  d_v.Upload(v);
  if (!AdamWUpdateMixed(d_pb.get(), d_p.get(), d_gb.get(), d_m.get(), d_v.get(), n, a, nullptr)
           .ok()) {
    g_failed = true;
  }
  const auto got_master = d_p.Download();
  pd.assign(p.begin(), p.begin() + k);
  md.assign(m.begin(), m.begin() + k);
  vd.assign(v.begin(), v.begin() + k);
  for (int64_t i = 0; i < k; ++i) gd[i] = __bfloat162float(gb[i]);
  AdamWUpdateReference(pd.data(), gd.data(), md.data(), vd.data(), k, a);
  us = TimeUs("adamw mixed", [&] {
    return AdamWUpdateMixed(d_pb.get(), d_p.get(), d_gb.get(), d_m.get(), d_v.get(), n, a, nullptr);
  });
  Add("adamw bf16+fp32 master", shape, us, 28.0 * n, 0,
      Err(MaxAbsErr(got_master.data(), pd.data(), k)));
}

void BenchCastAndPrecision() {
  const Shapes& sh = g_shapes;
  [[maybe_unused]] const int B = sh.B, T = sh.T, C = sh.C, NH = sh.NH, V = sh.V, Vp = sh.Vp;
  [[maybe_unused]] const int64_t BT = int64_t{B} * T, P = sh.params;
  const int64_t n = P;
  const std::string shape = absl::StrFormat("n=%.1fM", P / 1e6);
  const auto x = Random(n, 26, -100.f, 100.f);
  Buffer<float> d_x(x), back(n);
  Buffer<__nv_bfloat16> bf(n);
  double us =
      TimeUs("cast fp32->bf16", [&] { return CastFloatToBf16(bf.get(), d_x.get(), n, nullptr); });
  const auto got = bf.Download();
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; i += 7) {  // every 7th element vs the host's round-to-nearest-even
    uint16_t a, b;
    const __nv_bfloat16 want = __float2bfloat16_rn(x[i]);
    std::memcpy(&a, &got[i], 2);
    std::memcpy(&b, &want, 2);
    mismatches += a != b;
  }
  Add("cast fp32->bf16", shape, us, 6.0 * n, 0,
      mismatches == 0 ? "0 (bitwise)" : absl::StrFormat("%d MISMATCHES", mismatches));
  us = TimeUs("cast bf16->fp32", [&] { return CastBf16ToFloat(back.get(), bf.get(), n, nullptr); });
  Add("cast bf16->fp32", shape, us, 6.0 * n, 0, "exact by construction");

  Buffer<int> flag(1);
  us = TimeUs("unscale + finite check",
              [&] { return UnscaleAndCheckFinite(back.get(), n, 1.0f, flag.get(), nullptr); });
  const int flagged = flag.Download()[0];
  Add("unscale + finite check", shape, us, 8.0 * n, 0,
      flagged == 0 ? "flag 0 (correct)" : "FLAG SET ON FINITE DATA");
  if (flagged != 0) g_failed = true;
}

void PrintTable() {
  const char* headers[] = {"kernel", "shape", "time", "throughput", "max abs err vs f64"};
  size_t width[5];
  for (int c = 0; c < 5; ++c) width[c] = std::strlen(headers[c]);
  for (const Row& r : g_rows) {
    const std::string* cells[] = {&r.kernel, &r.shape, &r.time, &r.throughput, &r.error};
    for (int c = 0; c < 5; ++c) width[c] = std::max(width[c], cells[c]->size());
  }
  auto line = [&](const std::string* cells) {
    std::printf("|");
    for (int c = 0; c < 5; ++c)
      std::printf(" %-*s |", static_cast<int>(width[c]), cells[c].c_str());
    std::printf("\n");
  };
  const std::string h[] = {headers[0], headers[1], headers[2], headers[3], headers[4]};
  line(h);
  std::printf("|");
  for (int c = 0; c < 5; ++c) std::printf("%s|", std::string(width[c] + 2, '-').c_str());
  std::printf("\n");
  for (const Row& r : g_rows) {
    const std::string cells[] = {r.kernel, r.shape, r.time, r.throughput, r.error};
    line(cells);
  }
}

int Main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      g_iters = 5;
    } else if (std::strcmp(argv[i], "--once") == 0) {
      g_iters = 1;
    } else if (std::strcmp(argv[i], "--tiny") == 0) {
      g_shapes = Shapes{2, 64, 64, 4, 1000, 1024, 100003};
    } else {
      std::printf("usage: kernel_bench [--quick | --once] [--tiny]\n");
      return 2;
    }
  }
  if (absl::Status s = CudaDeviceStatus(); !s.ok()) {
    std::printf("kernel_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  cudaDeviceProp prop;
  Check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::fprintf(stderr, "kernel_bench on %s (%d SMs), %d timed launches per kernel\n", prop.name,
               prop.multiProcessorCount, g_iters);
  BenchEncoder();
  BenchLayerNorm();
  BenchMatmul();
  BenchAttention();
  BenchGelu();
  BenchResidual();
  BenchCrossEntropy();
  BenchAdamW();
  BenchCastAndPrecision();
  std::printf("\nCUDA kernels on %s, %s shapes (time = mean per launch):\n\n", prop.name,
              g_shapes.T == 1024 ? "GPT-2 124M" : "toy");
  PrintTable();
  if (g_failed) std::printf("\nSOME KERNELS FAILED (see stderr above)\n");
  return g_failed ? 1 : 0;
}

}  // namespace
}  // namespace dstrain::kernels::gpu

int main(int argc, char** argv) { return dstrain::kernels::gpu::Main(argc, argv); }
