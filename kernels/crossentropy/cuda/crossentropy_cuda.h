// Fused softmax + cross-entropy over a padded vocabulary on the GPU (CUDA); same math and
// contracts as kernels/crossentropy/crossentropy.h. For each row n, over j in [0, V) only:
//   m = max_j z_j,  S = Σ_j exp(z_j − m),  loss_n = log S + m − z_target
//   dz_j = (exp(z_j − m) / S − [j == target]) · dlogits_scale   (j < V);   dz_j = 0   (V <= j < Vp)
//
// Contracts: when dlogits_scale != 0, `logits` is OVERWRITTEN with dlogits (all Vp columns);
// when it is 0 the logits are left unchanged (forward only). `losses` is overwritten when not
// null. Padded columns are never read. Targets must lie in [0, V); an out-of-range target is not
// read out of bounds: its row gets a NaN loss (and no −1 term), which the caller's loss check sees.
//
// One thread block per row: each thread keeps a running (max, sum) over its strided columns
// (online softmax, one read of the row), the block merges the pairs in a fixed tree, then a second
// pass writes the gradient. Deterministic. Device pointers; enqueued on `stream`, not waited for.
// Errors: kInvalidArgument for bad sizes (N < 0, V < 1 with N > 0, Vp < V) or null pointers with
// work to do; CUDA failures via CudaToStatus.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace dstrain::kernels::gpu {

absl::Status CrossEntropyForwardBackward(float* losses,           // (N) may be null
                                         float* logits,           // (N, Vp) in: logits;
                                                                  //   out: dlogits
                                         const int32_t* targets,  // (N)
                                         int64_t N, int V, int Vp, float dlogits_scale,
                                         cudaStream_t stream);

}  // namespace dstrain::kernels::gpu
