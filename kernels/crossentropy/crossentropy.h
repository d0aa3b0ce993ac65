// Fused softmax + cross-entropy over a padded vocabulary, forward and backward in one pass over
// the logits (the logits are overwritten by their gradient, as in llm.c, so the (N, Vp) tensor is
// never held twice).
//
// For each row n, over the real vocabulary j in [0, V) only:
//   m = max_j z_j,  S = Σ_j exp(z_j − m),  loss_n = log S + m − z_target
//   dz_j = (exp(z_j − m) / S − [j == target]) · dlogits_scale      (j < V)
//   dz_j = 0                                                         (V <= j < Vp)
// The max subtraction keeps exp in range for any logits. dlogits_scale is usually 1 / (B·T·grad
// accumulation steps): the mean loss's gradient.
//
// Contracts: when dlogits_scale != 0, `logits` is OVERWRITTEN with dlogits (all Vp columns);
// when dlogits_scale == 0 it is left unchanged (forward only). `losses` (per-row loss) is
// overwritten when not null. Targets must lie in [0, V) (checked with DT_CHECK: the data loader
// is expected to have validated tokens). Rows are independent and split across threads: results
// are bitwise identical for any thread count.
// Accuracy vs float64 (crossentropy_test, logits ≈ 50): loss within 1e-5 absolute (the float
// additions of m ≈ 50 round at ~4e-6); each dlogit within 1e-6 relative + 1e-7·|scale|.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

void CrossEntropyForwardBackward(float* losses,           // (N) may be null
                                 float* logits,           // (N, Vp) in: logits; out: dlogits
                                 const int32_t* targets,  // (N)
                                 int64_t N, int V, int Vp, float dlogits_scale);

// The mean of N per-row losses, summed in double in row order (deterministic).
double MeanLoss(const float* losses,  // (N)
                int64_t N);

}  // namespace dstrain::kernels
