#include "kernels/rope/rope_reference.h"

#include <cmath>

namespace dstrain::kernels {
namespace {

// sign = +1: rotate by +angle (forward); −1: by −angle (the transpose, for the backward pass).
void Rotate(double* out, const double* inp, int B, int T, int n_heads, int D, double theta,
            int pos_offset, double sign) {
  const int half = D / 2;
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < n_heads; ++h) {
        const int64_t base = ((static_cast<int64_t>(b) * T + t) * n_heads + h) * D;
        for (int i = 0; i < half; ++i) {
          const double a = RopeAngleReference(pos_offset + t, i, D, theta);
          const double c = std::cos(a), s = sign * std::sin(a);
          const double x1 = inp[base + i], x2 = inp[base + half + i];
          out[base + i] = x1 * c - x2 * s;
          out[base + half + i] = x2 * c + x1 * s;
        }
      }
    }
  }
}

}  // namespace

double RopeAngleReference(int pos, int i, int D, double theta) {
  return pos * std::pow(theta, -2.0 * i / D);
}

void RopeForwardReference(double* out, const double* inp, int B, int T, int n_heads, int D,
                          double theta, int pos_offset) {
  Rotate(out, inp, B, T, n_heads, D, theta, pos_offset, 1.0);
}

void RopeBackwardReference(double* dinp, const double* dout, int B, int T, int n_heads, int D,
                           double theta, int pos_offset) {
  Rotate(dinp, dout, B, T, n_heads, D, theta, pos_offset, -1.0);
}

}  // namespace dstrain::kernels
