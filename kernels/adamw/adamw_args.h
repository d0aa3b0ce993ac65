// The hyper-parameters of one fused AdamW / Adam step, shared by the CPU kernel (adamw.h), the
// CUDA kernel (cuda/adamw_cuda.h) and the engine that fills them in. Plain C++, no dependencies.
#pragma once

namespace dstrain::kernels {

// Hyper-parameters are doubles, like PyTorch's Python floats: 1 − beta2 from a float beta2 = 0.999f
// would be off by 1.3e-5 relative (0.999f = 0.99901287...), which shows in v and the step.
struct AdamWArgs {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double bias_correction1 = 1.0;  // 1 − beta1^t, or 1 when bias correction is disabled
  double bias_correction2 = 1.0;  // 1 − beta2^t, or 1 when disabled
  bool adamw_mode = true;         // true: decoupled decay (AdamW); false: L2 added to the gradient
  double grad_scale = 1.0;        // gradients are multiplied by this (rounded to float) first
};

}  // namespace dstrain::kernels
