// AdamW kernels: one element-wise step, shared by the fp32 and the mixed-precision variants.
#include "kernels/adamw/cuda/adamw_launch.h"
#include "kernels/cuda_common/device_common.cuh"

namespace dstrain::kernels::gpu {
namespace {

constexpr int kThreads = 256;

struct Moments {
  float p, m, v;
};

// One element, in the CPU kernel's order (adamw_body.inc): explicit fmaf where it fuses,
// __fmul_rn where it must not (nvcc would otherwise contract p·decay + step into one fma).
__device__ __forceinline__ Moments Step(float p, float grad, float m, float v,
                                        const AdamWConsts& k) {
  float g = grad * k.grad_scale;
  if (!k.decoupled) g = fmaf(p, k.weight_decay, g);              // grad.add(param, alpha=wd)
  const float nm = fmaf(g, k.one_minus_beta1, m * k.beta1);      // exp_avg
  const float nv = fmaf(k.one_minus_beta2 * g, g, v * k.beta2);  // exp_avg_sq
  const float denom = sqrtf(nv) / k.bc2_sqrt + k.eps;
  const float decayed = k.decoupled ? __fmul_rn(p, k.decay_scale) : p;
  const float np = decayed + (-k.step_size * nm) / denom;
  return Moments{np, nm, nv};
}

__global__ void AdamWKernel(float* param, const float* grad, float* m, float* v, int64_t n,
                            AdamWConsts k) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    const Moments r = Step(param[i], grad[i], m[i], v[i], k);
    param[i] = r.p;
    m[i] = r.m;
    v[i] = r.v;
  }
}

template <typename Half, typename Grad>
__global__ void AdamWMixedKernel(Half* param16, float* master, const Grad* grad, float* m, float* v,
                                 int64_t n, AdamWConsts k) {
  for (int64_t i = GridStrideBegin(); i < n; i += GridStrideStep()) {
    const Moments r = Step(master[i], ToFloat(grad[i]), m[i], v[i], k);
    master[i] = r.p;
    param16[i] = FromFloat<Half>(r.p);
    m[i] = r.m;
    v[i] = r.v;
  }
}

}  // namespace

cudaError_t LaunchAdamW(float* param, const float* grad, float* m, float* v, int64_t n,
                        const AdamWConsts& k, cudaStream_t stream) {
  DT_LAUNCH(AdamWKernel, GridStrideBlocks(n, kThreads), kThreads, stream, param, grad, m, v, n, k);
  return cudaGetLastError();
}

template <typename Half, typename Grad>
cudaError_t LaunchAdamWMixed(Half* param16, float* master, const Grad* grad, float* m, float* v,
                             int64_t n, const AdamWConsts& k, cudaStream_t stream) {
  auto* kernel = AdamWMixedKernel<Half, Grad>;
  DT_LAUNCH(kernel, GridStrideBlocks(n, kThreads), kThreads, stream, param16, master, grad, m, v, n,
            k);
  return cudaGetLastError();
}

template cudaError_t LaunchAdamWMixed<__nv_bfloat16, float>(__nv_bfloat16*, float*, const float*,
                                                            float*, float*, int64_t,
                                                            const AdamWConsts&, cudaStream_t);
template cudaError_t LaunchAdamWMixed<__nv_bfloat16, __nv_bfloat16>(__nv_bfloat16*, float*,
                                                                    const __nv_bfloat16*, float*,
                                                                    float*, int64_t,
                                                                    const AdamWConsts&,
                                                                    cudaStream_t);
template cudaError_t LaunchAdamWMixed<__half, float>(__half*, float*, const float*, float*, float*,
                                                     int64_t, const AdamWConsts&, cudaStream_t);
template cudaError_t LaunchAdamWMixed<__half, __half>(__half*, float*, const __half*, float*,
                                                      float*, int64_t, const AdamWConsts&,
                                                      cudaStream_t);

}  // namespace dstrain::kernels::gpu
