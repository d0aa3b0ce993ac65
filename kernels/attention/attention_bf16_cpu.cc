#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/status/status_macros.h"
#include "kernels/attention/attention_bf16.h"
#include "kernels/attention/pair_threads.h"
#include "kernels/cast/half_simd.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"

namespace dstrain::kernels {
namespace {

using attention_internal::PairThreads;
using attention_internal::ThreadIndex;

// Query rows per block, and the multiple every padded dimension is rounded up to (bf16_tiles.h).
constexpr int kBlock = 32;

struct Bf16Dims {
  int T, hs;
  int Tp, hsp;     // T and hs rounded up to kBlock
  int64_t ld_qkv;  // 3C
  int64_t ld_out;  // C
  float scale;     // 1 / sqrt(hs)
};

// A thread's workspace for one pair's forward pass (bf16 unless noted).
struct ForwardWork {
  uint16_t* rows;  // (Tp, hsp): K or V rounded, before their layout changes
  uint16_t* q;     // (Tp, hsp)
  uint16_t* kt;    // Kᵀ (hsp, Tp), pair-interleaved
  uint16_t* v;     // V (Tp, hsp), pair-interleaved
  float* s;        // (kBlock, Tp) f32 scores
  uint16_t* p;     // (kBlock, Tp)
  float* o;        // (kBlock, hsp) f32
};

struct BackwardWork {
  uint16_t* rows;                    // (Tp, hsp): an operand between layout changes
  uint16_t *q, *kt, *k, *vt, *dout;  // as ForwardWork; k: K (Tp, hsp) pair-interleaved
  uint16_t *qt, *doutt;              // Qᵀ and dOᵀ (hsp, Tp), row-major
  uint16_t *p, *ds;                  // (kBlock, Tp) row-major
  uint16_t *p_pairs, *ds_pairs;      // the whole head's P and dS, pair-interleaved (Tp, Tp)
  float *s, *dp;                     // (kBlock, Tp) f32
  float* dq;                         // (kBlock, hsp) f32
  float *dkt, *dvt;                  // (hsp, Tp) f32
};

#include "kernels/cast/half_simd_isa.inc"
#define DT_ISA_BODY "kernels/attention/attention_bf16_body.inc"
#include "kernels/common/foreach_isa.inc"

int RoundUp(int x) { return (x + kBlock - 1) / kBlock * kBlock; }

Bf16Dims Dims(int T, int C, int NH) {
  DT_CHECK(NH > 0 && C % NH == 0);
  Bf16Dims g;
  g.T = T;
  g.hs = C / NH;
  g.Tp = RoundUp(T);
  g.hsp = RoundUp(g.hs);
  g.ld_qkv = 3 * int64_t{C};
  g.ld_out = C;
  g.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(g.hs)));
  return g;
}

// Carves consecutive regions, each a whole number of 16 floats (so 64-byte aligned where the base
// is, as ThreadScratch's is), out of a float buffer; with base == nullptr it only counts, so the
// sizes and the layout come from the same code.
class Carver {
 public:
  explicit Carver(float* base) : base_(base) {}
  float* Floats(int64_t n) {
    float* p = base_ == nullptr ? nullptr : base_ + used_;
    used_ += (n + 15) / 16 * 16;
    return p;
  }
  uint16_t* Halves(int64_t n) { return reinterpret_cast<uint16_t*>(Floats((n + 1) / 2)); }
  int64_t used() const { return used_; }

 private:
  float* base_;
  int64_t used_ = 0;
};

ForwardWork CarveForward(Carver& c, const Bf16Dims& g) {
  const int64_t head = int64_t{g.Tp} * g.hsp, panel = int64_t{kBlock} * g.Tp;
  ForwardWork w;
  w.rows = c.Halves(head);
  w.q = c.Halves(head);
  w.kt = c.Halves(head);
  w.v = c.Halves(head);
  w.s = c.Floats(panel);
  w.p = c.Halves(panel);
  w.o = c.Floats(int64_t{kBlock} * g.hsp);
  return w;
}

BackwardWork CarveBackward(Carver& c, const Bf16Dims& g) {
  const int64_t head = int64_t{g.Tp} * g.hsp, panel = int64_t{kBlock} * g.Tp;
  BackwardWork w;
  w.rows = c.Halves(head);
  w.q = c.Halves(head);
  w.kt = c.Halves(head);
  w.k = c.Halves(head);
  w.vt = c.Halves(head);
  w.dout = c.Halves(head);
  w.qt = c.Halves(head);
  w.doutt = c.Halves(head);
  w.p = c.Halves(panel);
  w.ds = c.Halves(panel);
  w.p_pairs = c.Halves(int64_t{g.Tp} * g.Tp);
  w.ds_pairs = c.Halves(int64_t{g.Tp} * g.Tp);
  w.s = c.Floats(panel);
  w.dp = c.Floats(panel);
  w.dq = c.Floats(int64_t{kBlock} * g.hsp);
  w.dkt = c.Floats(head);
  w.dvt = c.Floats(head);
  return w;
}

int64_t BackwardFloatsPerThread(const Bf16Dims& g) {
  Carver count(nullptr);
  CarveBackward(count, g);
  return count.used();
}

template <typename Out>
void ForwardAll(Out* out, float* stats, const float* qkv, int B, int T, int C, int NH,
                TileRoute route) {
  if (B <= 0 || T <= 0) return;
  const Bf16Dims g = Dims(T, C, NH);
  const auto fn = DT_ISA_SELECT(ForwardHead<Out>);
  const int64_t pairs = int64_t{B} * NH;
  Carver count(nullptr);
  CarveForward(count, g);
  const int64_t work_floats = count.used();
#pragma omp parallel for schedule(static) num_threads(PairThreads(B, T, C, NH))
  for (int64_t bh = 0; bh < pairs; ++bh) {
    const int64_t b = bh / NH, h = bh % NH;
    const float* q = qkv + b * T * g.ld_qkv + h * g.hs;
    Carver carver(ThreadScratch(work_floats));
    TileScope tiles(route);
    fn(out + b * T * C + h * g.hs, stats + 2 * bh * T, q, q + C, q + 2 * C, g,
       CarveForward(carver, g), route);
  }
}

}  // namespace

void AttentionForwardBf16(uint16_t* out, float* stats, const float* qkv, int B, int T, int C,
                          int NH, TileRoute route) {
  ForwardAll(out, stats, qkv, B, T, C, NH, route);
}

void AttentionForwardBf16(float* out, float* stats, const float* qkv, int B, int T, int C, int NH,
                          TileRoute route) {
  ForwardAll(out, stats, qkv, B, T, C, NH, route);
}

int64_t AttentionBackwardBf16ScratchFloats(int B, int T, int C, int NH) {
  if (B <= 0 || T <= 0) return 0;
  const int64_t pairs = int64_t{B} * NH;
  const int threads = KernelThreads();
  return (pairs < threads ? pairs : threads) * BackwardFloatsPerThread(Dims(T, C, NH));
}

void AttentionBackwardBf16(float* dqkv, float* scratch, const float* dout, const float* qkv,
                           const float* stats, int B, int T, int C, int NH, TileRoute route) {
  if (B <= 0 || T <= 0) return;
  const Bf16Dims g = Dims(T, C, NH);
  const auto fn = DT_ISA_SELECT(BackwardHead);
  const int64_t pairs = int64_t{B} * NH;
  const int64_t per_thread = BackwardFloatsPerThread(g);
#pragma omp parallel for schedule(static) num_threads(PairThreads(B, T, C, NH))
  for (int64_t bh = 0; bh < pairs; ++bh) {
    const int64_t b = bh / NH, h = bh % NH;
    const int64_t offset = b * T * g.ld_qkv + h * g.hs;
    const float* q = qkv + offset;
    float* dq = dqkv + offset;
    Carver carver(scratch + ThreadIndex() * per_thread);
    TileScope tiles(route);
    fn(dq, dq + C, dq + 2 * C, dout + b * T * C + h * g.hs, q, q + C, q + 2 * C, stats + 2 * bh * T,
       g, CarveBackward(carver, g), route);
  }
}

}  // namespace dstrain::kernels
