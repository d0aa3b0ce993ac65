#include "kernels/attention/attention_reference.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dstrain::kernels {

void AttentionForwardReference(double* out, double* att, const double* qkv, int B, int T, int C,
                               int NH) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      double* p = att + (static_cast<int64_t>(b) * NH + h) * T * T;
      for (int i = 0; i < T; ++i) {
        const double* q = qkv + (static_cast<int64_t>(b) * T + i) * 3 * C + h * hs;
        double* row = p + static_cast<int64_t>(i) * T;
        double m = -INFINITY;
        for (int j = 0; j < T; ++j) {
          if (j > i) {
            row[j] = 0;
            continue;
          }
          const double* k = qkv + (static_cast<int64_t>(b) * T + j) * 3 * C + C + h * hs;
          double dot = 0;
          for (int d = 0; d < hs; ++d) dot += q[d] * k[d];
          row[j] = dot * scale;
          m = std::max(m, row[j]);
        }
        double sum = 0;
        for (int j = 0; j <= i; ++j) sum += (row[j] = std::exp(row[j] - m));
        for (int j = 0; j <= i; ++j) row[j] /= sum;
        double* o = out + (static_cast<int64_t>(b) * T + i) * C + h * hs;
        for (int d = 0; d < hs; ++d) o[d] = 0;
        for (int j = 0; j <= i; ++j) {
          const double* v = qkv + (static_cast<int64_t>(b) * T + j) * 3 * C + 2 * C + h * hs;
          for (int d = 0; d < hs; ++d) o[d] += row[j] * v[d];
        }
      }
    }
  }
}

void AttentionBackwardReference(double* dqkv, const double* dout, const double* qkv,
                                const double* att, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  for (int64_t i = 0; i < static_cast<int64_t>(B) * T * 3 * C; ++i) dqkv[i] = 0;
  // Offset of head h of part (0: q, 1: k, 2: v) of token (b, t) in a tensor of row stride `stride`.
  auto at = [&](int b, int t, int64_t stride, int part, int h) {
    return (static_cast<int64_t>(b) * T + t) * stride + part * C + h * hs;
  };
  std::vector<double> dp(T);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const double* p = att + (static_cast<int64_t>(b) * NH + h) * T * T;
      for (int i = 0; i < T; ++i) {
        const double* pi = p + static_cast<int64_t>(i) * T;
        const double* doi = dout + at(b, i, C, 0, h);
        // dP[i][j] = dO[i] · V[j]; dS = P (dP − Σ_j P dP).
        double dot = 0;
        for (int j = 0; j <= i; ++j) {
          const double* v = qkv + at(b, j, 3 * C, 2, h);
          dp[j] = 0;
          for (int d = 0; d < hs; ++d) dp[j] += doi[d] * v[d];
          dot += pi[j] * dp[j];
        }
        for (int j = 0; j <= i; ++j) {
          const double ds = pi[j] * (dp[j] - dot) * scale;
          const double* q = qkv + at(b, i, 3 * C, 0, h);
          const double* k = qkv + at(b, j, 3 * C, 1, h);
          double* dq = dqkv + at(b, i, 3 * C, 0, h);
          double* dk = dqkv + at(b, j, 3 * C, 1, h);
          double* dv = dqkv + at(b, j, 3 * C, 2, h);
          for (int d = 0; d < hs; ++d) {
            dq[d] += ds * k[d];
            dk[d] += ds * q[d];
            dv[d] += pi[j] * doi[d];
          }
        }
      }
    }
  }
}

}  // namespace dstrain::kernels
