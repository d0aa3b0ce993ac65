#include <cmath>
#include <cstdint>
#include <vector>

#include "common/status/status_macros.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"
#include "kernels/rope/rope.h"

namespace dstrain::kernels {
namespace {

#define DT_ISA_BODY "kernels/rope/rope_body.inc"
#include "kernels/common/foreach_isa.inc"

void CheckShape(int64_t out_stride, int64_t inp_stride, int max_pos, int T, int n_heads,
                int head_dim, int pos_offset) {
  DT_CHECK(head_dim > 0 && head_dim % 2 == 0);
  DT_CHECK(n_heads >= 0 && pos_offset >= 0 && static_cast<int64_t>(pos_offset) + T <= max_pos);
  DT_CHECK(out_stride >= static_cast<int64_t>(n_heads) * head_dim);
  DT_CHECK(inp_stride >= static_cast<int64_t>(n_heads) * head_dim);
}

void Rotate(float* out, int64_t out_stride, const float* inp, int64_t inp_stride,
            const float* table, int max_pos, int B, int T, int n_heads, int head_dim,
            int pos_offset, float sin_sign) {
  if (B <= 0 || T <= 0 || n_heads == 0) return;
  CheckShape(out_stride, inp_stride, max_pos, T, n_heads, head_dim, pos_offset);
  const auto fn = DT_ISA_SELECT(RotateRows);
  const int64_t rows = static_cast<int64_t>(B) * T;
  // ~3 flops an element on 2 streams: plain streaming work.
  ParallelFor(rows, ThreadsFor(rows * n_heads * head_dim), 1, [&](int64_t begin, int64_t end) {
    fn(out, out_stride, inp, inp_stride, table, begin, end, T, n_heads, head_dim, pos_offset,
       sin_sign);
  });
}

}  // namespace

int64_t RopeTableFloats(int max_pos, int head_dim) {
  return static_cast<int64_t>(max_pos) * head_dim;
}

void RopeTable(float* table, int max_pos, int head_dim, double theta) {
  DT_CHECK(head_dim > 0 && head_dim % 2 == 0 && max_pos >= 0 && theta > 0);
  const int half = head_dim / 2;
  // θ_i once per pair index (the same double expression as rope_reference.cc's angle).
  std::vector<double> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = std::pow(theta, -2.0 * i / head_dim);
  for (int p = 0; p < max_pos; ++p) {
    float* row = table + static_cast<int64_t>(p) * head_dim;
    for (int i = 0; i < half; ++i) {
      const double angle = p * inv_freq[i];
      row[i] = static_cast<float>(std::cos(angle));
      row[half + i] = static_cast<float>(std::sin(angle));
    }
  }
}

void RopeForward(float* out, int64_t out_stride, const float* inp, int64_t inp_stride,
                 const float* table, int max_pos, int B, int T, int n_heads, int head_dim,
                 int pos_offset) {
  Rotate(out, out_stride, inp, inp_stride, table, max_pos, B, T, n_heads, head_dim, pos_offset,
         1.f);
}

void RopeBackward(float* dinp, int64_t dinp_stride, const float* dout, int64_t dout_stride,
                  const float* table, int max_pos, int B, int T, int n_heads, int head_dim,
                  int pos_offset) {
  Rotate(dinp, dinp_stride, dout, dout_stride, table, max_pos, B, T, n_heads, head_dim, pos_offset,
         -1.f);
}

}  // namespace dstrain::kernels
