// Fused AdamW / Adam optimizer step on fp32 parameters, in place, one pass over memory.
//
// Per element, in the order torch.optim.AdamW / torch.optim.Adam (single-tensor path) use:
//   g = grad · grad_scale                       (gradient clipping / loss-scale unscaling, fused)
//   Adam (L2):  g = g + weight_decay · p        (adamw_mode == false)
//   m = beta1 · m + (1 − beta1) · g
//   v = beta2 · v + (1 − beta2) · g²
//   denom = sqrt(v) / sqrt(bias_correction2) + eps
//   AdamW:      p = p · (1 − lr · weight_decay) (adamw_mode == true; decoupled decay)
//   p = p − (lr / bias_correction1) · m / denom
// Scalars that PyTorch derives in Python double precision (1 − lr·wd, lr / bc1, sqrt(bc2),
// 1 − beta) are derived here in double and rounded to float once, as PyTorch does when it passes
// them to its fp32 kernels, and the fused multiply-adds sit where ATen's vectorised kernels have
// them: the result matches torch 1.13's torch.optim.AdamW / Adam to within 1 ulp (adamw_test's
// golden trajectories). torch >= 2.0 updates m with lerp_, which rounds m differently by ~1 ulp.
//
// Contracts: param, m and v are updated in place; grad is read only. Vectorised (AVX-512 / AVX2 /
// scalar at run time) and split over OpenMP threads in large contiguous chunks. Element-wise:
// bitwise identical for any thread count. Memory-bound: 28 bytes per parameter.
#pragma once

#include <cstdint>

#include "kernels/adamw/adamw_args.h"
#include "kernels/cast/cast.h"

namespace dstrain::kernels {

void AdamWUpdate(float* param,       // (n) updated in place
                 const float* grad,  // (n)
                 float* m,           // (n) first moment, updated in place
                 float* v,           // (n) second moment, updated in place
                 int64_t n, const AdamWArgs& a);

// Mixed precision: the same step on fp32 master weights with 16-bit gradients (bf16 or fp16,
// times grad_scale, e.g. clip_coef / loss_scale), also writing the updated 16-bit working copy
// param16[i] = round16(master[i]). Bitwise equal to widening the gradients, AdamWUpdate, and
// rounding the master weights. 26 bytes per parameter read and written (+2 for param16). When
// the update's 28 bytes per parameter are more than twice the last-level cache, param16 is
// written with streaming stores (no read of its lines first; the copy leaves the caches).
void AdamWUpdateMixed(float* master,           // (n) updated in place
                      const uint16_t* grad16,  // (n) bf16 or fp16
                      float* m, float* v,      // (n) moments, updated in place
                      uint16_t* param16,       // (n) written: the rounded master weights
                      int64_t n, const AdamWArgs& a, DType type);

}  // namespace dstrain::kernels
