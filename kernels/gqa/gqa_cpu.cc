#include <cstdint>

#include "common/status/status_macros.h"
#include "kernels/attention/attention.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"
#include "kernels/gqa/gqa.h"

namespace dstrain::kernels {
namespace {

#define DT_ISA_BODY "kernels/gqa/gqa_body.inc"
#include "kernels/common/foreach_isa.inc"

void CheckHeads(int NH, int NKV, int HS) {
  DT_CHECK(NKV > 0 && NH > 0 && NH % NKV == 0);
  DT_CHECK(HS > 0);
}

// Floats of one expanded (B, T, 3·NH·HS) buffer, rounded up to whole cache lines so that the
// regions carved out of one scratch allocation stay 64-byte aligned if the scratch is.
int64_t ExpandedFloats(int B, int T, int NH, int HS) {
  const int64_t n = int64_t{B} * T * 3 * NH * HS;
  return (n + 15) / 16 * 16;
}

}  // namespace

int64_t GqaForwardScratchFloats(int B, int T, int NH, int NKV, int HS) {
  CheckHeads(NH, NKV, HS);
  if (B <= 0 || T <= 0 || NKV == NH) return 0;
  return ExpandedFloats(B, T, NH, HS);
}

namespace {

template <typename Out>
void ForwardAll(Out* out, float* stats, float* scratch, const float* qkv, int B, int T, int NH,
                int NKV, int HS) {
  CheckHeads(NH, NKV, HS);
  if (B <= 0 || T <= 0) return;
  const int C = NH * HS;
  if (NKV == NH) {  // already the (B, T, 3C) layout
    AttentionForward(out, stats, qkv, B, T, C, NH);
    return;
  }
  const int64_t rows = int64_t{B} * T;
  const auto expand = DT_ISA_SELECT(ExpandRows);
  ParallelFor(rows, ThreadsFor(rows * 3 * C), 1,
              [&](int64_t begin, int64_t end) { expand(scratch, qkv, begin, end, NH, NKV, HS); });
  AttentionForward(out, stats, scratch, B, T, C, NH);
}

}  // namespace

void GqaForward(float* out, float* stats, float* scratch, const float* qkv, int B, int T, int NH,
                int NKV, int HS) {
  ForwardAll(out, stats, scratch, qkv, B, T, NH, NKV, HS);
}

void GqaForward(uint16_t* out_bf16, float* stats, float* scratch, const float* qkv, int B, int T,
                int NH, int NKV, int HS) {
  ForwardAll(out_bf16, stats, scratch, qkv, B, T, NH, NKV, HS);
}

int64_t GqaBackwardScratchFloats(int B, int T, int NH, int NKV, int HS) {
  CheckHeads(NH, NKV, HS);
  if (B <= 0 || T <= 0) return 0;
  const int64_t attention = AttentionBackwardScratchFloats(B, T, NH * HS, NH);
  if (NKV == NH) return attention;
  return 2 * ExpandedFloats(B, T, NH, HS) + attention;
}

void GqaBackward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                 const float* stats, int B, int T, int NH, int NKV, int HS) {
  CheckHeads(NH, NKV, HS);
  if (B <= 0 || T <= 0) return;
  const int C = NH * HS;
  if (NKV == NH) {
    AttentionBackward(dqkv, scratch, dout, qkv, stats, B, T, C, NH);
    return;
  }
  const int64_t rows = int64_t{B} * T;
  float* expanded = scratch;
  float* dexpanded = scratch + ExpandedFloats(B, T, NH, HS);
  float* attention_scratch = dexpanded + ExpandedFloats(B, T, NH, HS);
  const auto expand = DT_ISA_SELECT(ExpandRows);
  const auto reduce = DT_ISA_SELECT(ReduceRows);
  const int threads = ThreadsFor(rows * 3 * C);
  ParallelFor(rows, threads, 1,
              [&](int64_t begin, int64_t end) { expand(expanded, qkv, begin, end, NH, NKV, HS); });
  AttentionBackward(dexpanded, attention_scratch, dout, expanded, stats, B, T, C, NH);
  ParallelFor(rows, threads, 1, [&](int64_t begin, int64_t end) {
    reduce(dqkv, dexpanded, begin, end, NH, NKV, HS);
  });
}

}  // namespace dstrain::kernels
