// RankDevice: the device one training rank computes on, and the communicators its groups use.
//
// The one place that turns job.device into a backend (docs/architecture.md, "The device seam"):
//
//   cpu              CpuOps over a CpuAllocator; groups over Gloo
//   cuda             CudaOps on visible GPU (local_rank mod the GPUs visible); groups over NCCL,
//                    or, when two ranks of a group share one GPU (NCCL refuses that), over Gloo
//                    through host memory (HostStagedCommunicator)
//   auto             cuda where this process sees a GPU, else cpu
//
// The binary picks the implementation at link time: `:rank_device` (CUDA builds: the real
// runtime; --config=nocuda builds: the CPU only) or `:rank_device_sim` (tests: CUDA on the
// runtime simulator of kernels/cuda_common, every group host-staged). Libraries depend on
// `:rank_device_api` only.
//
// Not thread-safe: one rank's setup thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/device/ops.h"
#include "worker/store/store.h"
#include "worker/tensor/allocator.h"

namespace dstrain::device {

enum class DeviceChoice { kAuto, kCpu, kCuda };

struct RankDeviceOptions {
  DeviceChoice choice = DeviceChoice::kAuto;
  // This rank's index among the ranks of its job on this host (`dstrain launch`'s local rank;
  // 0 under the worker agent, which makes one GPU visible per rank).
  int local_rank = 0;
  // CUDA: the allocator's budget in bytes (0: the device's memory) and TF32 for fp32 products.
  int64_t memory_limit_bytes = 0;
  bool allow_tf32 = false;
  // The address of this host's interface the other hosts reach it at: host-memory groups (Gloo)
  // bind to it and publish it for their peers. 127.0.0.1 serves ranks on one host only; the
  // worker agent passes the address it reaches the coordinator from (docs/service.md, "Several
  // hosts").
  std::string bind_address = "127.0.0.1";
};

// How many CUDA devices this process sees (0 in builds without CUDA); when none, `why` (if given)
// says what the runtime answered.
int VisibleCudaDevices(std::string* why = nullptr);

class RankDevice {
 public:
  // Opens the device. kFailedPrecondition "no CUDA device visible (<the runtime's answer>)" for
  // kCuda without a GPU; the backend's errors otherwise.
  static absl::StatusOr<std::unique_ptr<RankDevice>> Open(const RankDeviceOptions& options);
  virtual ~RankDevice() = default;

  Ops& ops() { return *ops_; }
  tensor::Allocator& allocator() { return *allocator_; }
  bool is_cuda() const { return ops_->device().is_cuda(); }
  // What the out-of-memory error quotes as the prediction (`dstrain estimate`'s line); a no-op on
  // the CPU, whose allocator does not fail that way.
  virtual void SetMemoryExpectation(std::string /*expected*/) {}

  // Joins group `name` of `size` ranks as `rank` through `store` (every rank of the group calls
  // it with the same name and size; collective over the store). Each rank publishes which
  // physical device it computes on; the group picks one backend for all its ranks from that
  // (the communicator's backend() names it).
  // Errors: the store's (kDeadlineExceeded naming the missing rank) and the backend's.
  absl::StatusOr<std::unique_ptr<comm::Communicator>> JoinGroup(store::Store* store, int rank,
                                                                int size, absl::string_view name,
                                                                absl::Duration timeout);

 protected:
  RankDevice(std::unique_ptr<tensor::Allocator> allocator, std::unique_ptr<Ops> ops,
             tensor::Allocator* ops_allocator, std::string identity)
      : owned_allocator_(std::move(allocator)),
        ops_(std::move(ops)),
        allocator_(ops_allocator),
        identity_(std::move(identity)) {}
  // Where host-memory groups bind (RankDeviceOptions::bind_address).
  const std::string& bind_address() const { return bind_address_; }
  // The group for this device once the ranks' identities are known: `shared` when two ranks of
  // it compute on one physical device.
  virtual absl::StatusOr<std::unique_ptr<comm::Communicator>> CreateGroup(store::Store* store,
                                                                          int rank, int size,
                                                                          absl::string_view name,
                                                                          absl::Duration timeout,
                                                                          bool shared) = 0;

 private:
  std::unique_ptr<tensor::Allocator> owned_allocator_;  // the CPU's; CudaOps owns its own
  std::unique_ptr<Ops> ops_;
  tensor::Allocator* allocator_;
  // Names the physical device across the job's hosts: "<host>/cpu:<pid>" (never shared),
  // "<host>/cuda:<PCI bus id>".
  std::string identity_;
  std::string bind_address_ = "127.0.0.1";
  friend class RankDeviceOpener;  // sets bind_address_ (rank_device_open.cc)
};

}  // namespace dstrain::device
