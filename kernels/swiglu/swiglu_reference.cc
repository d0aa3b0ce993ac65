#include "kernels/swiglu/swiglu_reference.h"

#include <cmath>

namespace dstrain::kernels {

void SwiGluForwardReference(double* out, const double* inp, int64_t N, int I) {
  for (int64_t r = 0; r < N; ++r) {
    for (int c = 0; c < I; ++c) {
      const double g = inp[r * 2 * I + c], u = inp[r * 2 * I + I + c];
      out[r * I + c] = g / (1.0 + std::exp(-g)) * u;
    }
  }
}

void SwiGluBackwardReference(double* dinp, const double* inp, const double* dout, int64_t N,
                             int I) {
  for (int64_t r = 0; r < N; ++r) {
    for (int c = 0; c < I; ++c) {
      const double g = inp[r * 2 * I + c], u = inp[r * 2 * I + I + c], dy = dout[r * I + c];
      const double s = 1.0 / (1.0 + std::exp(-g));
      dinp[r * 2 * I + c] = dy * u * s * (1.0 + g * (1.0 - s));
      dinp[r * 2 * I + I + c] = dy * g * s;
    }
  }
}

}  // namespace dstrain::kernels
