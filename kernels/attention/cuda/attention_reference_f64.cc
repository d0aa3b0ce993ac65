#include "kernels/attention/cuda/attention_reference_f64.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dstrain::kernels::gpu {

void AttentionForwardReference(double* out, double* att, const double* qkv, int B, int T, int C,
                               int NH) {
  const int HS = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int i = 0; i < T; ++i) {
        const double* q = qkv + (int64_t{b} * T + i) * 3 * C + h * HS;
        double* a = att + ((int64_t{b} * NH + h) * T + i) * T;
        double max = -INFINITY;
        for (int j = 0; j <= i; ++j) {
          const double* k = qkv + (int64_t{b} * T + j) * 3 * C + C + h * HS;
          double s = 0;
          for (int d = 0; d < HS; ++d) s += q[d] * k[d];
          a[j] = s * scale;
          max = std::max(max, a[j]);
        }
        double sum = 0;
        for (int j = 0; j <= i; ++j) sum += (a[j] = std::exp(a[j] - max));
        for (int j = 0; j < T; ++j) a[j] = j <= i ? a[j] / sum : 0.0;
        double* o = out + (int64_t{b} * T + i) * C + h * HS;
        for (int d = 0; d < HS; ++d) {
          double acc = 0;
          for (int j = 0; j <= i; ++j) acc += a[j] * qkv[(int64_t{b} * T + j) * 3 * C + 2 * C + h * HS + d];
          o[d] = acc;
        }
      }
    }
  }
}

void AttentionBackwardReference(double* dqkv, const double* dout, const double* qkv,
                                const double* att, int B, int T, int C, int NH) {
  const int HS = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  std::fill(dqkv, dqkv + int64_t{B} * T * 3 * C, 0.0);
  std::vector<double> datt(T), dscore(T);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int i = 0; i < T; ++i) {
        const double* a = att + ((int64_t{b} * NH + h) * T + i) * T;
        const double* dy = dout + (int64_t{b} * T + i) * C + h * HS;
        // out_i = Σ_j a_j v_j  ->  datt_j = dy · v_j,  dv_j += a_j dy
        double dot = 0;
        for (int j = 0; j <= i; ++j) {
          const double* v = qkv + (int64_t{b} * T + j) * 3 * C + 2 * C + h * HS;
          double* dv = dqkv + (int64_t{b} * T + j) * 3 * C + 2 * C + h * HS;
          double s = 0;
          for (int d = 0; d < HS; ++d) {
            s += dy[d] * v[d];
            dv[d] += a[j] * dy[d];
          }
          datt[j] = s;
          dot += a[j] * s;
        }
        // softmax: dscore_j = a_j (datt_j − Σ_k a_k datt_k)
        for (int j = 0; j <= i; ++j) dscore[j] = a[j] * (datt[j] - dot);
        // score_j = scale · q_i · k_j
        const double* q = qkv + (int64_t{b} * T + i) * 3 * C + h * HS;
        double* dq = dqkv + (int64_t{b} * T + i) * 3 * C + h * HS;
        for (int j = 0; j <= i; ++j) {
          const double* k = qkv + (int64_t{b} * T + j) * 3 * C + C + h * HS;
          double* dk = dqkv + (int64_t{b} * T + j) * 3 * C + C + h * HS;
          for (int d = 0; d < HS; ++d) {
            dq[d] += scale * dscore[j] * k[d];
            dk[d] += scale * dscore[j] * q[d];
          }
        }
      }
    }
  }
}

}  // namespace dstrain::kernels::gpu
