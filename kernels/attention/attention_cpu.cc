#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/status/status_macros.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/pair_threads.h"
#include "kernels/cast/half_simd.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"

namespace dstrain::kernels {
namespace {

using attention_internal::PairThreads;
using attention_internal::ThreadIndex;

// Micro-kernel rows, the same for every ISA so that workspace sizes do not depend on the ISA.
constexpr int kAttentionMR = 6;

// Which part of the broadcast operand the micro-kernel skips (see TileKernel).
constexpr int kMaskNone = 0;
constexpr int kMaskEnd = 1;
constexpr int kMaskStart = 2;

// One micro-kernel call: C (mr rows, ldc) = scale · A B over k, A[r][k] = a[r·a_rs + k·a_ks]
// broadcast, B rows b + k·ldb loaded as vectors (padded: full vectors are always readable).
struct TileArgs {
  const float* a;
  int64_t a_rs, a_ks;
  const float* b;
  int64_t ldb;
  float* c;
  int64_t ldc;
  int64_t k;
  float scale;
  int last;  // valid lanes of the row's final vector
  int mask;
};

struct HeadDims {
  int T, hs;
  int Tp, hsp;     // T and hs rounded up to 16: row strides of the packed copies
  int64_t ld_qkv;  // 3C
  int64_t ld_out;  // C
  float scale;     // 1 / sqrt(hs)
};

#include "kernels/cast/half_simd_isa.inc"
#define DT_ISA_BODY "kernels/attention/attention_body.inc"
#include "kernels/common/foreach_isa.inc"

int RoundUp16(int x) { return (x + 15) / 16 * 16; }

HeadDims Dims(int T, int C, int NH) {
  DT_CHECK(NH > 0 && C % NH == 0);
  HeadDims g;
  g.T = T;
  g.hs = C / NH;
  g.Tp = RoundUp16(T);
  g.hsp = RoundUp16(g.hs);
  g.ld_qkv = 3 * static_cast<int64_t>(C);
  g.ld_out = C;
  g.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(g.hs)));
  return g;
}

int64_t ForwardWorkFloats(const HeadDims& g) {
  return static_cast<int64_t>(g.hs) * g.Tp + static_cast<int64_t>(g.T) * g.hsp +
         static_cast<int64_t>(kAttentionMR) * (g.Tp + g.hsp);
}

int64_t BackwardWorkFloats(const HeadDims& g) {
  return 2 * static_cast<int64_t>(g.T) * g.Tp + 2 * static_cast<int64_t>(g.hs) * g.Tp +
         3 * static_cast<int64_t>(g.T) * g.hsp;
}

// Offset of pair bh's q columns in qkv.
int64_t QkvOffset(const HeadDims& g, int64_t bh, int NH) {
  return (bh / NH) * g.T * g.ld_qkv + (bh % NH) * g.hs;
}

}  // namespace

int64_t AttentionStateFloats(int B, int T, int NH) {
  if (B <= 0 || T <= 0) return 0;
  return 2 * int64_t{B} * NH * T;
}

namespace {

template <typename Out>
void ForwardAll(Out* out, float* stats, const float* qkv, int B, int T, int C, int NH) {
  if (B <= 0 || T <= 0) return;
  const HeadDims g = Dims(T, C, NH);
  const auto fn = DT_ISA_SELECT(ForwardHead<Out>);
  const int64_t pairs = static_cast<int64_t>(B) * NH;
  const int64_t work_floats = ForwardWorkFloats(g);
#pragma omp parallel for schedule(static) num_threads(PairThreads(B, T, C, NH))
  for (int64_t bh = 0; bh < pairs; ++bh) {
    const int64_t b = bh / NH, h = bh % NH;
    const float* q = qkv + QkvOffset(g, bh, NH);
    fn(out + b * T * C + h * g.hs, stats + 2 * bh * T, q, q + C, q + 2 * C,
       bh + 1 < pairs ? qkv + QkvOffset(g, bh + 1, NH) : nullptr, g, ThreadScratch(work_floats));
  }
}

}  // namespace

void AttentionForward(float* out, float* stats, const float* qkv, int B, int T, int C, int NH) {
  ForwardAll(out, stats, qkv, B, T, C, NH);
}

void AttentionForward(uint16_t* out_bf16, float* stats, const float* qkv, int B, int T, int C,
                      int NH) {
  ForwardAll(out_bf16, stats, qkv, B, T, C, NH);
}

int64_t AttentionBackwardScratchFloats(int B, int T, int C, int NH) {
  if (B <= 0 || T <= 0) return 0;
  const HeadDims g = Dims(T, C, NH);
  const int64_t pairs = static_cast<int64_t>(B) * NH;
  const int64_t slots = pairs < KernelThreads() ? pairs : KernelThreads();
  return slots * BackwardWorkFloats(g);
}

void AttentionBackward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                       const float* stats, int B, int T, int C, int NH) {
  if (B <= 0 || T <= 0) return;
  const HeadDims g = Dims(T, C, NH);
  const auto fn = DT_ISA_SELECT(BackwardHead);
  const int64_t pairs = static_cast<int64_t>(B) * NH;
  const int64_t work_floats = BackwardWorkFloats(g);
  // Thread i uses workspace slot i; PairThreads() never exceeds the min(pairs, threads) slots
  // that AttentionBackwardScratchFloats() sized for.
#pragma omp parallel for schedule(static) num_threads(PairThreads(B, T, C, NH))
  for (int64_t bh = 0; bh < pairs; ++bh) {
    const int64_t b = bh / NH, h = bh % NH;
    float* dq = dqkv + QkvOffset(g, bh, NH);
    const float* q = qkv + QkvOffset(g, bh, NH);
    fn(dq, dq + C, dq + 2 * C, dout + b * T * C + h * g.hs, q, q + C, q + 2 * C, stats + 2 * bh * T,
       bh + 1 < pairs ? qkv + QkvOffset(g, bh + 1, NH) : nullptr, g,
       scratch + ThreadIndex() * work_floats);
  }
}

}  // namespace dstrain::kernels
