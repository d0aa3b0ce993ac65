#include "worker/comm/factory/cpu_communicator.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/comm/gloo/gloo_communicator.h"
#include "worker/comm/shm/shm_communicator.h"

namespace dstrain::comm {

namespace {

std::string ReadFirstLine(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string Link(const char* path) {
  char buf[256] = {};
  const ssize_t n = readlink(path, buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, n) : "?";
}

// An on-by-default switch: off when `name` is "0", "false", "off" or "no".
bool SwitchOn(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return true;
  const std::string s(v);
  return !(s == "0" || s == "false" || s == "off" || s == "no");
}

// Ranks on one host share memory unless DSTRAIN_SHM is off on a rank, which keeps it, and so its
// whole group, on Gloo.
bool ShmAllowed() { return SwitchOn("DSTRAIN_SHM"); }

// DSTRAIN_SHM_SHARED_BUFFERS off keeps a shm group's host buffers in each rank's own memory, so
// every collective is staged (ShmOptions::shared_buffers; for comparisons). Part of the identity:
// ranks that differ end up on Gloo together.
bool ShmSharedBuffers() { return SwitchOn("DSTRAIN_SHM_SHARED_BUFFERS"); }

}  // namespace

std::string CpuHostIdentity(absl::string_view bind_address) {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return absl::StrCat("shm=", ShmAllowed() ? 1 : 0, " shared=", ShmSharedBuffers() ? 1 : 0,
                      " boot=", ReadFirstLine("/proc/sys/kernel/random/boot_id"), " host=", host,
                      " bind=", bind_address, " ipc=", Link("/proc/self/ns/ipc"),
                      " mnt=", Link("/proc/self/ns/mnt"), " pid=", Link("/proc/self/ns/pid"));
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateCpuCommunicator(store::Store* store, int rank,
                                                                    int size,
                                                                    absl::string_view name,
                                                                    absl::Duration timeout,
                                                                    const std::string& hostname) {
  if (store == nullptr || size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("CPU group '", name, "': rank ", rank, " of ", size, " needs a store"));
  }
  // Every rank reads every rank's identity, so all of them make the same choice.
  const std::string mine = CpuHostIdentity(hostname);
  const std::string prefix = absl::StrCat("cpu_group/", name, "/");
  if (absl::Status s = store->Set(absl::StrCat(prefix, rank), mine); !s.ok()) return s;
  bool same_host = absl::StartsWith(mine, "shm=1 ");
  std::vector<int> missing;
  for (int r = 0; r < size; ++r) {
    absl::StatusOr<std::string> id = store->Get(absl::StrCat(prefix, r), timeout);
    if (!id.ok()) {
      if (id.status().code() != absl::StatusCode::kDeadlineExceeded) return id.status();
      missing.push_back(r);
      continue;
    }
    same_host &= *id == mine;
  }
  if (!missing.empty()) {
    return absl::DeadlineExceededError(absl::StrCat(
        "CPU group '", name, "' (rank ", rank, " of ", size, "): rank(s) [",
        absl::StrJoin(missing, ", "), "] never joined within ", absl::FormatDuration(timeout)));
  }
  if (same_host) {
    ShmOptions shm;
    shm.timeout = timeout;
    shm.shared_buffers = ShmSharedBuffers();
    absl::StatusOr<std::unique_ptr<ShmCommunicator>> c =
        ShmCommunicator::Create(store, rank, size, name, shm);
    if (c.ok()) return std::unique_ptr<Communicator>(*std::move(c));
    // Every rank sees rank 0's failure to create the segment: all fall back together.
    if (c.status().code() != absl::StatusCode::kResourceExhausted) return c.status();
  }
  GlooOptions gloo;
  gloo.timeout = timeout;
  gloo.hostname = hostname;
  absl::StatusOr<std::unique_ptr<GlooCommunicator>> c =
      GlooCommunicator::Create(store, rank, size, name, gloo);
  if (!c.ok()) return c.status();
  return std::unique_ptr<Communicator>(*std::move(c));
}

}  // namespace dstrain::comm
