#include "kernels/adamw/adamw_reference.h"

#include <cmath>

namespace dstrain::kernels {

void AdamWUpdateReference(double* param, const double* grad, double* m, double* v, int64_t n,
                          const AdamWArgs& a) {
  const double lr = a.lr, b1 = a.beta1, b2 = a.beta2, eps = a.eps, wd = a.weight_decay;
  for (int64_t i = 0; i < n; ++i) {
    double g = grad[i] * a.grad_scale;
    if (!a.adamw_mode) g += wd * param[i];
    m[i] = b1 * m[i] + (1 - b1) * g;
    v[i] = b2 * v[i] + (1 - b2) * g * g;
    const double m_hat = m[i] / a.bias_correction1;
    const double denom = std::sqrt(v[i]) / std::sqrt(a.bias_correction2) + eps;
    if (a.adamw_mode) param[i] -= lr * wd * param[i];
    param[i] -= lr * m_hat / denom;
  }
}

}  // namespace dstrain::kernels
