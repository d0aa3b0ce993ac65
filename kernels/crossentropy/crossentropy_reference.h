// Float64 reference for crossentropy.h: softmax over the first V columns, then the loss and its
// gradient, written out separately (no fusion, no in-place tricks).
#pragma once

#include <cstdint>

namespace dstrain::kernels {

// losses[n] = −log softmax(logits[n, :V])[targets[n]].
void CrossEntropyForwardReference(double* losses,          // (N)
                                  const double* logits,    // (N, Vp)
                                  const int32_t* targets,  // (N)
                                  int64_t N, int V, int Vp);

// dlogits[n, j] = (softmax_j − [j == target]) · scale for j < V, 0 for V <= j < Vp (overwrites).
void CrossEntropyBackwardReference(double* dlogits,         // (N, Vp)
                                   const double* logits,    // (N, Vp)
                                   const int32_t* targets,  // (N)
                                   int64_t N, int V, int Vp, double scale);

}  // namespace dstrain::kernels
