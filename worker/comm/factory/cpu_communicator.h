// The communicator for CPU memory: ShmCommunicator when every rank of the group is on this host
// (worker/comm/shm), GlooCommunicator otherwise (worker/comm/gloo).
//
// The choice is made identically on every rank through the store: each rank publishes a host
// identity (the kernel's boot_id, the host name, the address Gloo would bind to, the IPC, mount
// and pid namespaces, and whether DSTRAIN_SHM allows shared memory on that rank) under
// "cpu_group/<name>/<rank>", reads every rank's, and picks shm only if all identities are equal
// and allow it. So ranks in other containers or network namespaces, with other bind addresses,
// or any rank with DSTRAIN_SHM=0, make the whole group use Gloo. When
// rank 0 cannot create the segment (/dev/shm full or missing) every rank gets kResourceExhausted
// and falls back to Gloo.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/comm/communicator.h"
#include "worker/store/store.h"

namespace dstrain::comm {

// This process's host identity as published (hostname is the Gloo bind address).
std::string CpuHostIdentity(absl::string_view bind_address);

// Joins group `name` of `size` as `rank` for CPU buffers; collective over `store`. Errors: the
// store's (kDeadlineExceeded naming the missing ranks) and the chosen backend's.
absl::StatusOr<std::unique_ptr<Communicator>> CreateCpuCommunicator(store::Store* store, int rank,
                                                                    int size,
                                                                    absl::string_view name,
                                                                    absl::Duration timeout,
                                                                    const std::string& hostname);

}  // namespace dstrain::comm
