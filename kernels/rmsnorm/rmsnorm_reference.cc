#include "kernels/rmsnorm/rmsnorm_reference.h"

#include <cmath>

namespace dstrain::kernels {

void RmsNormForwardReference(double* out, double* rstd, const double* inp, const double* weight,
                             int64_t N, int C, double eps) {
  for (int64_t i = 0; i < N; ++i) {
    const double* x = inp + i * C;
    double ms = 0;
    for (int c = 0; c < C; ++c) ms += x[c] * x[c];
    ms /= C;
    const double rs = 1.0 / std::sqrt(ms + eps);
    for (int c = 0; c < C; ++c) out[i * C + c] = x[c] * rs * weight[c];
    rstd[i] = rs;
  }
}

void RmsNormBackwardReference(double* dinp, double* dweight, const double* dout, const double* inp,
                              const double* weight, const double* rstd, int64_t N, int C) {
  for (int64_t i = 0; i < N; ++i) {
    const double* x = inp + i * C;
    const double* dy = dout + i * C;
    // ∂out_c/∂x_j = weight_c·(δ_cj·rstd − rstd³·x_c·x_j / C).
    double mean_gn = 0;
    for (int c = 0; c < C; ++c) mean_gn += dy[c] * weight[c] * x[c] * rstd[i];
    mean_gn /= C;
    for (int c = 0; c < C; ++c) {
      const double n = x[c] * rstd[i];
      dinp[i * C + c] += rstd[i] * (dy[c] * weight[c] - n * mean_gn);
      dweight[c] += dy[c] * n;
    }
  }
}

}  // namespace dstrain::kernels
