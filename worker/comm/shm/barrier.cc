#include "common/status/status_macros.h"
#include "worker/comm/shm/algorithms.h"

namespace dstrain::comm::shm_internal {

absl::Status RunBarrier(Steps& steps) {
  DT_RETURN_IF_ERROR(steps.Begin());
  DT_RETURN_IF_ERROR(steps.Arrive());
  steps.Done();
  return absl::OkStatus();
}

}  // namespace dstrain::comm::shm_internal
