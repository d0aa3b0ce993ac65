// The communicator for a device: the one place that knows which backend moves which memory.
//
//   CPU memory  → ShmCommunicator when every rank is on this host (worker/comm/shm), else
//                 GlooCommunicator (TCP; worker/comm/gloo): see cpu_communicator.h
//                 (DSTRAIN_SHM=0 on a rank puts its group on Gloo)
//   CUDA memory → NcclCommunicator (worker/comm/nccl), in builds with CUDA
//
// Tests that run ranks as threads construct FakeCommunicators directly (worker/comm/fake). A
// new device adds its backend here (docs/architecture.md, "Adding a device").
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/types/dtype.h"
#include "worker/comm/communicator.h"
#include "worker/store/store.h"

namespace dstrain::comm {

struct GroupOptions {
  // Bounds the rendezvous and connection setup (each operation has its own CommOptions).
  absl::Duration timeout = absl::Minutes(5);
  // CPU groups: the local interface address Gloo binds to.
  std::string hostname = "127.0.0.1";
};

// Joins group `name` of `size` ranks as `rank`, for buffers on `device`; every rank of the group
// calls it with the same store, name and size. Errors: the backend's (see its Create), and
// kUnimplemented for a CUDA device in a build without CUDA.
absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(Device device, store::Store* store,
                                                                 int rank, int size,
                                                                 absl::string_view name,
                                                                 const GroupOptions& options);

}  // namespace dstrain::comm
