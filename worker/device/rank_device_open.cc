// The devices behind RankDevice::Open, one build per implementation (rank_device.h):
//   DSTRAIN_HAVE_CUDA=0                      the CPU only (--config=nocuda)
//   DSTRAIN_HAVE_CUDA=1, DSTRAIN_CUDA_SIM=0  the CPU and CUDA on the real runtime, NCCL
//   DSTRAIN_HAVE_CUDA=1, DSTRAIN_CUDA_SIM=1  the CPU and CUDA on the runtime simulator
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/device/rank_device.h"
#if DSTRAIN_HAVE_CUDA
#include <cuda_runtime.h>

#include "worker/device/cuda/cuda_ops.h"
#include "worker/device/cuda/host_staged_communicator.h"
#endif
#if DSTRAIN_CUDA_SIM
#include "worker/comm/factory/cpu_communicator.h"
#else
#include "worker/comm/factory/factory.h"
#endif

namespace dstrain::device {
namespace {

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

// A group for host memory: shared memory when every rank is on this host, else Gloo
// (worker/comm/factory/cpu_communicator.h).
absl::StatusOr<std::unique_ptr<comm::Communicator>> CpuGroup(store::Store* store, int rank,
                                                             int size, absl::string_view name,
                                                             absl::Duration timeout,
                                                             const std::string& bind_address) {
#if DSTRAIN_CUDA_SIM
  // The simulator's binaries must not link the real CUDA runtime, which NCCL (and so the
  // communicator factory) brings in: the CPU half of the factory directly.
  return comm::CreateCpuCommunicator(store, rank, size, name, timeout, bind_address);
#else
  comm::GroupOptions group;
  group.timeout = timeout;
  group.hostname = bind_address;
  return comm::CreateCommunicator(Device::Cpu(), store, rank, size, name, group);
#endif
}

class CpuDevice final : public RankDevice {
 public:
  static std::unique_ptr<RankDevice> Open() {
    auto allocator = std::make_unique<tensor::CpuAllocator>();
    tensor::Allocator* a = allocator.get();
    auto ops = std::make_unique<CpuOps>(a);
    // A process's CPU memory is its own: never shared with another rank.
    std::string identity = absl::StrCat(HostName(), "/cpu:", getpid());
    return std::unique_ptr<RankDevice>(
        new CpuDevice(std::move(allocator), std::move(ops), a, std::move(identity)));
  }

 private:
  using RankDevice::RankDevice;
  absl::StatusOr<std::unique_ptr<comm::Communicator>> CreateGroup(store::Store* store, int rank,
                                                                  int size, absl::string_view name,
                                                                  absl::Duration timeout,
                                                                  bool /*shared*/) override {
    return CpuGroup(store, rank, size, name, timeout, bind_address());
  }
};

#if DSTRAIN_HAVE_CUDA
class CudaDevice final : public RankDevice {
 public:
  static absl::StatusOr<std::unique_ptr<RankDevice>> Open(const RankDeviceOptions& options,
                                                          int visible) {
    CudaOps::Options o;
    o.device = options.local_rank % visible;
    o.limit_bytes = options.memory_limit_bytes;
    o.allow_tf32 = options.allow_tf32;
    DT_ASSIGN_OR_RETURN(std::unique_ptr<CudaOps> ops, CudaOps::Create(o));
    std::string identity = absl::StrCat(HostName(), "/cuda:", BusId(o.device));
    tensor::Allocator* allocator = &ops->cuda_allocator();
    return std::unique_ptr<RankDevice>(
        new CudaDevice(nullptr, std::move(ops), allocator, std::move(identity)));
  }
  void SetMemoryExpectation(std::string expected) override {
    static_cast<CudaOps&>(ops()).cuda_allocator().set_expected(std::move(expected));
  }

 private:
  using RankDevice::RankDevice;

  static std::string BusId(int device) {
#if DSTRAIN_CUDA_SIM
    // Each simulated device lives in its own process.
    return absl::StrCat("sim", device, ":", getpid());
#else
    char id[64] = {};
    if (cudaDeviceGetPCIBusId(id, sizeof(id) - 1, device) != cudaSuccess) {
      cudaGetLastError();
      return absl::StrCat(device);
    }
    return id;
#endif
  }

  absl::StatusOr<std::unique_ptr<comm::Communicator>> CreateGroup(store::Store* store, int rank,
                                                                  int size, absl::string_view name,
                                                                  absl::Duration timeout,
                                                                  bool shared) override {
#if DSTRAIN_CUDA_SIM
    (void)shared;  // no NCCL on the simulator: every group goes through host memory
#else
    if (!shared) {
      comm::GroupOptions group;
      group.timeout = timeout;
      return comm::CreateCommunicator(ops().device(), store, rank, size, name, group);
    }
#endif
    DT_ASSIGN_OR_RETURN(auto inner, CpuGroup(store, rank, size, name, timeout, bind_address()));
    return std::unique_ptr<comm::Communicator>(
        std::make_unique<HostStagedCommunicator>(std::move(inner)));
  }
};
#endif

}  // namespace

int VisibleCudaDevices(std::string* why) {
#if DSTRAIN_HAVE_CUDA
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (why != nullptr) *why = absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e));
    return 0;
  }
  if (count == 0 && why != nullptr) *why = "the CUDA runtime sees 0 devices";
  return count;
#else
  if (why != nullptr) *why = "this build has no CUDA (--config=nocuda)";
  return 0;
#endif
}

class RankDeviceOpener {
 public:
  static absl::StatusOr<std::unique_ptr<RankDevice>> Open(const RankDeviceOptions& options) {
    if (options.local_rank < 0) {
      return absl::InvalidArgumentError(absl::StrCat("local rank ", options.local_rank, " < 0"));
    }
    if (options.bind_address.empty()) {
      return absl::InvalidArgumentError("bind address: empty (expected this host's address)");
    }
    DT_ASSIGN_OR_RETURN(std::unique_ptr<RankDevice> device, OpenDevice(options));
    device->bind_address_ = options.bind_address;
    return device;
  }

 private:
  static absl::StatusOr<std::unique_ptr<RankDevice>> OpenDevice(const RankDeviceOptions& options) {
    if (options.choice == DeviceChoice::kCpu) return CpuDevice::Open();
    std::string why;
    const int visible = VisibleCudaDevices(&why);
    if (visible == 0) {
      if (options.choice == DeviceChoice::kAuto) return CpuDevice::Open();
      return absl::FailedPreconditionError(absl::StrCat("no CUDA device visible (", why, ")"));
    }
#if DSTRAIN_HAVE_CUDA
    return CudaDevice::Open(options, visible);
#else
    return absl::InternalError("unreachable: CUDA devices in a build without CUDA");
#endif
  }
};

absl::StatusOr<std::unique_ptr<RankDevice>> RankDevice::Open(const RankDeviceOptions& options) {
  return RankDeviceOpener::Open(options);
}

}  // namespace dstrain::device
