#include "kernels/crossentropy/crossentropy_reference.h"

#include <cmath>
#include <vector>

namespace dstrain::kernels {
namespace {

std::vector<double> Softmax(const double* z, int V) {
  double m = z[0];
  for (int j = 1; j < V; ++j) m = z[j] > m ? z[j] : m;
  std::vector<double> p(V);
  double sum = 0;
  for (int j = 0; j < V; ++j) sum += (p[j] = std::exp(z[j] - m));
  for (int j = 0; j < V; ++j) p[j] /= sum;
  return p;
}

}  // namespace

void CrossEntropyForwardReference(double* losses, const double* logits, const int32_t* targets,
                                  int64_t N, int V, int Vp) {
  for (int64_t n = 0; n < N; ++n) {
    const double* z = logits + n * Vp;
    double m = z[0];
    for (int j = 1; j < V; ++j) m = z[j] > m ? z[j] : m;
    double sum = 0;
    for (int j = 0; j < V; ++j) sum += std::exp(z[j] - m);
    losses[n] = std::log(sum) + m - z[targets[n]];
  }
}

void CrossEntropyBackwardReference(double* dlogits, const double* logits, const int32_t* targets,
                                   int64_t N, int V, int Vp, double scale) {
  for (int64_t n = 0; n < N; ++n) {
    const std::vector<double> p = Softmax(logits + n * Vp, V);
    for (int j = 0; j < Vp; ++j) {
      const double onehot = j == targets[n] ? 1.0 : 0.0;
      dlogits[n * Vp + j] = j < V ? (p[j] - onehot) * scale : 0.0;
    }
  }
}

}  // namespace dstrain::kernels
