#include "worker/device/sizing.h"

namespace dstrain::device {

int64_t CudaSizing::AttentionStateElements(int B, int T, int /*C*/, int NH) const {
  return int64_t{B} * NH * T * T;  // the softmax probabilities
}

int64_t CudaSizing::AttentionScratchElements(int, int, int, int) const {
  return 0;  // the kernels take theirs from the stream-ordered pool
}

int64_t CudaSizing::GqaStateElements(int B, int T, int NH, int /*NKV*/, int /*HS*/) const {
  return int64_t{B} * NH * T * T;  // the softmax probabilities
}

int64_t CudaSizing::GqaScratchElements(int, int, int, int, int) const {
  return 0;  // the kernels take theirs from the stream-ordered pool
}

}  // namespace dstrain::device
