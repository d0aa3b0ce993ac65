#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

#include "kernels/adamw/adamw.h"
#include "kernels/adamw/adamw_testing.h"
#include "kernels/cast/half_simd.h"
#include "kernels/common/simd.h"
#include "kernels/common/threading.h"

namespace dstrain::kernels {
namespace {

// The per-call scalars of the update, derived in double and rounded once (see adamw.h).
struct AdamWConsts {
  float grad_scale;
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float weight_decay;  // added to the gradient in Adam (L2) mode
  float decay_scale;   // 1 − lr·weight_decay, applied to the parameter in AdamW mode
  float step_size;     // lr / bias_correction1
  float bc2_sqrt;      // sqrt(bias_correction2)
  float eps;
  bool decoupled;
};

// The 16-bit loads and stores (mixed precision) join simd.h's vocabulary in each ISA build.
#include "kernels/cast/half_simd_isa.inc"

#define DT_ISA_BODY "kernels/adamw/adamw_body.inc"
#include "kernels/common/foreach_isa.inc"

// Chunks are whole multiples of 4 KiB of floats, so threads never share a cache line or page.
constexpr int64_t kAlign = 1024;

AdamWConsts MakeConsts(const AdamWArgs& a) {
  const double lr = a.lr, wd = a.weight_decay;
  AdamWConsts k;
  k.grad_scale = static_cast<float>(a.grad_scale);
  k.beta1 = static_cast<float>(a.beta1);
  k.one_minus_beta1 = static_cast<float>(1.0 - a.beta1);
  k.beta2 = static_cast<float>(a.beta2);
  k.one_minus_beta2 = static_cast<float>(1.0 - a.beta2);
  k.weight_decay = static_cast<float>(wd);
  k.decay_scale = static_cast<float>(1.0 - lr * wd);
  k.step_size = static_cast<float>(lr / a.bias_correction1);
  k.bc2_sqrt = static_cast<float>(std::sqrt(a.bias_correction2));
  k.eps = static_cast<float>(a.eps);
  k.decoupled = a.adamw_mode;
  return k;
}

std::atomic<int64_t> stream_threshold_for_test{-1};  // -1: none (ScopedMixedStreamThreshold)

// Whether the mixed update writes its 16-bit copy around the caches: only when the update's
// traffic (28 bytes per parameter) is more than twice the last-level cache (taken as at least
// 32 MiB, also when the system does not say), so that the copy would be evicted before the next
// forward pass reads it anyway. Below that, a cached copy is worth more to that pass than the
// read-for-ownership the streaming store saves here.
bool StreamParam16(int64_t n) {
  const int64_t forced = stream_threshold_for_test.load(std::memory_order_relaxed);
  if (forced >= 0) return n >= forced;
  static const int64_t kCacheBytes = [] {
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return std::max<int64_t>({int64_t{l3}, int64_t{l2}, int64_t{32} << 20});
  }();
  return n * 28 > 2 * kCacheBytes;
}

template <DType kType>
void AdamWUpdateMixedT(float* master, const uint16_t* grad16, float* m, float* v, uint16_t* param16,
                       int64_t n, const AdamWConsts& k) {
  const auto fn = DT_ISA_SELECT(UpdateRangeMixed<kType>);
  const bool stream = StreamParam16(n);
  ParallelFor(n, ThreadsFor(n), kAlign, [&](int64_t begin, int64_t end) {
    fn(master + begin, grad16 + begin, m + begin, v + begin, param16 + begin, end - begin, k,
       stream);
  });
}

}  // namespace

ScopedMixedStreamThreshold::ScopedMixedStreamThreshold(int64_t min_params) {
  stream_threshold_for_test.store(min_params < 0 ? 0 : min_params);
}
ScopedMixedStreamThreshold::~ScopedMixedStreamThreshold() { stream_threshold_for_test.store(-1); }

void AdamWUpdate(float* param, const float* grad, float* m, float* v, int64_t n,
                 const AdamWArgs& a) {
  if (n <= 0) return;
  const AdamWConsts k = MakeConsts(a);
  const auto fn = DT_ISA_SELECT(UpdateRange);
  ParallelFor(n, ThreadsFor(n), kAlign, [&](int64_t begin, int64_t end) {
    fn(param + begin, grad + begin, m + begin, v + begin, end - begin, k);
  });
}

void AdamWUpdateMixed(float* master, const uint16_t* grad16, float* m, float* v, uint16_t* param16,
                      int64_t n, const AdamWArgs& a, DType type) {
  if (n <= 0) return;
  const AdamWConsts k = MakeConsts(a);
  if (type == DType::kBF16) {
    AdamWUpdateMixedT<DType::kBF16>(master, grad16, m, v, param16, n, k);
  } else {
    AdamWUpdateMixedT<DType::kF16>(master, grad16, m, v, param16, n, k);
  }
}

}  // namespace dstrain::kernels
