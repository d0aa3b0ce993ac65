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

double RoundToBf16(double x) {
  if (x == 0 || !std::isfinite(x)) return x;
  int e;
  std::frexp(x, &e);  // |x| = m · 2^e, m in [0.5, 1): 8 significant bits leave a step of 2^(e-8)
  return std::ldexp(std::nearbyint(std::ldexp(x, 8 - e)), e - 8);
}

void AttentionBf16ProductsReference(double* out, double* stats, double* dqkv, const double* qkv,
                                    const double* dout, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  const int64_t ld = 3 * int64_t{C};
  auto q = [&](int b, int i, int d, int part) {
    return RoundToBf16(qkv[(int64_t{b} * T + i) * ld + part * C + d]);
  };
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const int c0 = h * hs;
      std::vector<double> p(int64_t{T} * T, 0.0), ds(int64_t{T} * T, 0.0);
      for (int i = 0; i < T; ++i) {
        std::vector<double> s(i + 1);
        double m = -INFINITY;
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (int d = 0; d < hs; ++d) dot += q(b, i, c0 + d, 0) * q(b, j, c0 + d, 1);
          s[j] = scale * dot;
          m = std::max(m, s[j]);
        }
        double sum = 0;
        for (int j = 0; j <= i; ++j) sum += std::exp(s[j] - m);
        double* st = stats + 2 * ((int64_t{b} * NH + h) * T + i);
        st[0] = m;
        st[1] = 1 / sum;
        for (int j = 0; j <= i; ++j) p[int64_t{i} * T + j] = std::exp(s[j] - m) / sum;
        // dP = dO Vᵀ, then dS from the unrounded P.
        std::vector<double> dp(i + 1);
        double dot = 0;
        for (int j = 0; j <= i; ++j) {
          double x = 0;
          for (int d = 0; d < hs; ++d) {
            x += RoundToBf16(dout[(int64_t{b} * T + i) * C + c0 + d]) * q(b, j, c0 + d, 2);
          }
          dp[j] = x;
          dot += p[int64_t{i} * T + j] * x;
        }
        for (int j = 0; j <= i; ++j) {
          ds[int64_t{i} * T + j] = RoundToBf16(scale * p[int64_t{i} * T + j] * (dp[j] - dot));
        }
        for (int d = 0; d < hs; ++d) {
          double o = 0;
          for (int j = 0; j <= i; ++j) o += RoundToBf16(p[int64_t{i} * T + j]) * q(b, j, c0 + d, 2);
          out[(int64_t{b} * T + i) * C + c0 + d] = o;
        }
      }
      for (int t = 0; t < T; ++t) {
        for (int d = 0; d < hs; ++d) {
          double dq = 0, dk = 0, dv = 0;
          for (int j = 0; j <= t; ++j) dq += ds[int64_t{t} * T + j] * q(b, j, c0 + d, 1);
          for (int i = t; i < T; ++i) {
            dk += ds[int64_t{i} * T + t] * q(b, i, c0 + d, 0);
            dv += RoundToBf16(p[int64_t{i} * T + t]) *
                  RoundToBf16(dout[(int64_t{b} * T + i) * C + c0 + d]);
          }
          double* row = dqkv + (int64_t{b} * T + t) * ld + c0 + d;
          row[0] = dq;
          row[C] = dk;
          row[2 * C] = dv;
        }
      }
    }
  }
}

}  // namespace dstrain::kernels
