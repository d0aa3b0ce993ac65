#include "kernels/encoder/encoder_reference.h"

namespace dstrain::kernels {

void EncoderForwardReference(double* out, const int32_t* tokens, const double* wte,
                             const double* wpe, int B, int T, int C) {
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const int64_t n = static_cast<int64_t>(b) * T + t;
      for (int c = 0; c < C; ++c) {
        out[n * C + c] =
            wte[static_cast<int64_t>(tokens[n]) * C + c] + wpe[static_cast<int64_t>(t) * C + c];
      }
    }
  }
}

void EncoderBackwardReference(double* dwte, double* dwpe, const double* dout, const int32_t* tokens,
                              int B, int T, int C) {
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const int64_t n = static_cast<int64_t>(b) * T + t;
      for (int c = 0; c < C; ++c) {
        dwte[static_cast<int64_t>(tokens[n]) * C + c] += dout[n * C + c];
        dwpe[static_cast<int64_t>(t) * C + c] += dout[n * C + c];
      }
    }
  }
}

}  // namespace dstrain::kernels
