#include "kernels/gelu/gelu_reference.h"

#include <cmath>

namespace dstrain::kernels {
namespace {

const double kK = std::sqrt(2.0 / M_PI);
constexpr double kC = 0.044715;

}  // namespace

void GeluForwardReference(double* out, const double* inp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double x = inp[i];
    out[i] = 0.5 * x * (1.0 + std::tanh(kK * (x + kC * x * x * x)));
  }
}

void GeluBackwardReference(double* dinp, const double* inp, const double* dout, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double x = inp[i];
    const double t = std::tanh(kK * (x + kC * x * x * x));
    const double sech2 = 1.0 - t * t;
    const double grad = 0.5 * (1.0 + t) + 0.5 * x * sech2 * kK * (1.0 + 3.0 * kC * x * x);
    dinp[i] = grad * dout[i];
  }
}

}  // namespace dstrain::kernels
