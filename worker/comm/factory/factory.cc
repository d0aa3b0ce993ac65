#include "worker/comm/factory/factory.h"

#include "absl/status/status.h"
#include "worker/comm/factory/cpu_communicator.h"
#if DSTRAIN_HAVE_NCCL
#include "worker/comm/nccl/nccl_communicator.h"
#endif

namespace dstrain::comm {

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(Device device, store::Store* store,
                                                                 int rank, int size,
                                                                 absl::string_view name,
                                                                 const GroupOptions& options) {
  if (device.is_cpu()) {
    return CreateCpuCommunicator(store, rank, size, name, options.timeout, options.hostname);
  }
#if DSTRAIN_HAVE_NCCL
  NcclOptions nccl;
  nccl.init_timeout = options.timeout;
  auto c = NcclCommunicator::Create(store, rank, size, name, device.index, nccl);
  if (!c.ok()) return c.status();
  return std::unique_ptr<Communicator>(std::move(*c));
#else
  return absl::UnimplementedError(
      "a CUDA communicator needs NCCL: this build has no CUDA (--config=nocuda)");
#endif
}

}  // namespace dstrain::comm
