#include "kernels/residual/residual_reference.h"

namespace dstrain::kernels {

void ResidualForwardReference(double* out, const double* a, const double* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

double SumSquaresReference(const double* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

}  // namespace dstrain::kernels
