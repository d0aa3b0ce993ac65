// RankDevice's device-independent half: the group's choice of backend (rank_device.h). The
// devices themselves are in rank_device_open.cc, built once per implementation.
#include "worker/device/rank_device.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace dstrain::device {

absl::StatusOr<std::unique_ptr<comm::Communicator>> RankDevice::JoinGroup(store::Store* store,
                                                                          int rank, int size,
                                                                          absl::string_view name,
                                                                          absl::Duration timeout) {
  if (store == nullptr || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("group ", name, ": rank ", rank, " of ", size, " needs a store"));
  }
  // Every rank reads every rank's identity, so all of them make the same choice.
  const std::string prefix = absl::StrCat("device/", name, "/");
  DT_RETURN_IF_ERROR(store->Set(absl::StrCat(prefix, rank), identity_));
  std::set<std::string> devices;
  for (int r = 0; r < size; ++r) {
    DT_ASSIGN_OR_RETURN(std::string id, store->Get(absl::StrCat(prefix, r), timeout));
    devices.insert(std::move(id));
  }
  const bool shared = static_cast<int>(devices.size()) < size;
  return CreateGroup(store, rank, size, name, timeout, shared);
}

}  // namespace dstrain::device
