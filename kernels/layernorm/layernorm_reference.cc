#include "kernels/layernorm/layernorm_reference.h"

#include <cmath>

namespace dstrain::kernels {

void LayerNormForwardReference(double* out, double* mean, double* rstd, const double* inp,
                               const double* weight, const double* bias, int64_t N, int C) {
  for (int64_t i = 0; i < N; ++i) {
    const double* x = inp + i * C;
    double m = 0;
    for (int c = 0; c < C; ++c) m += x[c];
    m /= C;
    double var = 0;
    for (int c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
    var /= C;
    const double rs = 1.0 / std::sqrt(var + 1e-5);
    for (int c = 0; c < C; ++c) out[i * C + c] = (x[c] - m) * rs * weight[c] + bias[c];
    mean[i] = m;
    rstd[i] = rs;
  }
}

void LayerNormBackwardReference(double* dinp, double* dweight, double* dbias, const double* dout,
                                const double* inp, const double* weight, const double* mean,
                                const double* rstd, int64_t N, int C) {
  for (int64_t i = 0; i < N; ++i) {
    const double* x = inp + i * C;
    const double* dy = dout + i * C;
    double mean_g = 0, mean_gn = 0;
    for (int c = 0; c < C; ++c) {
      const double n = (x[c] - mean[i]) * rstd[i];
      mean_g += dy[c] * weight[c];
      mean_gn += dy[c] * weight[c] * n;
    }
    mean_g /= C;
    mean_gn /= C;
    for (int c = 0; c < C; ++c) {
      const double n = (x[c] - mean[i]) * rstd[i];
      const double g = dy[c] * weight[c];
      dinp[i * C + c] += rstd[i] * (g - mean_g - n * mean_gn);
      dweight[c] += dy[c] * n;
      dbias[c] += dy[c];
    }
  }
}

}  // namespace dstrain::kernels
