#include "kernels/gqa/gqa_reference.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dstrain::kernels {
namespace {

struct Layout {
  int T, NH, NKV, HS;
  int64_t row;  // (NH + 2·NKV)·HS
  // Offsets of q head h, k head j, v head j of token (b, t) in qkv.
  int64_t Q(int b, int t, int h) const { return (int64_t{b} * T + t) * row + int64_t{h} * HS; }
  int64_t K(int b, int t, int j) const { return Q(b, t, NH + j); }
  int64_t V(int b, int t, int j) const { return Q(b, t, NH + NKV + j); }
};

}  // namespace

void GqaForwardReference(double* out, double* att, const double* qkv, int B, int T, int NH, int NKV,
                         int HS) {
  const Layout L{T, NH, NKV, HS, int64_t{NH + 2 * NKV} * HS};
  const int G = NH / NKV;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const int j = h / G;
      double* p = att + (int64_t{b} * NH + h) * T * T;
      for (int i = 0; i < T; ++i) {
        const double* q = qkv + L.Q(b, i, h);
        double* row = p + int64_t{i} * T;
        double m = -INFINITY;
        for (int t = 0; t < T; ++t) {
          if (t > i) {
            row[t] = 0;
            continue;
          }
          const double* k = qkv + L.K(b, t, j);
          double dot = 0;
          for (int d = 0; d < HS; ++d) dot += q[d] * k[d];
          row[t] = dot * scale;
          m = std::max(m, row[t]);
        }
        double sum = 0;
        for (int t = 0; t <= i; ++t) sum += (row[t] = std::exp(row[t] - m));
        for (int t = 0; t <= i; ++t) row[t] /= sum;
        double* o = out + (int64_t{b} * T + i) * NH * HS + int64_t{h} * HS;
        for (int d = 0; d < HS; ++d) o[d] = 0;
        for (int t = 0; t <= i; ++t) {
          const double* v = qkv + L.V(b, t, j);
          for (int d = 0; d < HS; ++d) o[d] += row[t] * v[d];
        }
      }
    }
  }
}

void GqaBackwardReference(double* dqkv, const double* dout, const double* qkv, const double* att,
                          int B, int T, int NH, int NKV, int HS) {
  const Layout L{T, NH, NKV, HS, int64_t{NH + 2 * NKV} * HS};
  const int G = NH / NKV;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  std::fill(dqkv, dqkv + int64_t{B} * T * L.row, 0.0);
  std::vector<double> dp(T);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const int j = h / G;
      const double* p = att + (int64_t{b} * NH + h) * T * T;
      for (int i = 0; i < T; ++i) {
        const double* pi = p + int64_t{i} * T;
        const double* doi = dout + (int64_t{b} * T + i) * NH * HS + int64_t{h} * HS;
        // dP[i][t] = dO[i] · V[t]; dS = P (dP − Σ_t P dP).
        double dot = 0;
        for (int t = 0; t <= i; ++t) {
          const double* v = qkv + L.V(b, t, j);
          dp[t] = 0;
          for (int d = 0; d < HS; ++d) dp[t] += doi[d] * v[d];
          dot += pi[t] * dp[t];
        }
        for (int t = 0; t <= i; ++t) {
          const double ds = pi[t] * (dp[t] - dot) * scale;
          const double* q = qkv + L.Q(b, i, h);
          const double* k = qkv + L.K(b, t, j);
          double* dq = dqkv + L.Q(b, i, h);
          double* dk = dqkv + L.K(b, t, j);  // shared by the G query heads of group j: summed
          double* dv = dqkv + L.V(b, t, j);
          for (int d = 0; d < HS; ++d) {
            dq[d] += ds * k[d];
            dk[d] += ds * q[d];
            dv[d] += pi[t] * doi[d];
          }
        }
      }
    }
  }
}

}  // namespace dstrain::kernels
