#include "worker/comm/shm/shared_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dstrain::comm::shm_internal {

namespace {

std::string ErrnoText(int e) { return std::strerror(e); }

// Rank 0: a fresh file of `bytes`, or the error every rank reports.
absl::StatusOr<int> CreateFile(size_t bytes, std::string* name) {
  // A fresh name every time: concurrent jobs and groups never meet, and O_EXCL makes sure.
  absl::BitGen gen;
  int fd = -1;
  for (int attempt = 0; attempt < 8 && fd < 0; ++attempt) {
    *name = absl::StrCat("/dstrain-shm-", getpid(), "-",
                         absl::Hex(absl::Uniform<uint64_t>(gen), absl::kZeroPad16));
    fd = shm_open(name->c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0)
    return absl::ResourceExhaustedError(absl::StrCat("shm_open(", *name, "): ", ErrnoText(errno)));
  if (const int e = posix_fallocate(fd, 0, static_cast<off_t>(bytes)); e != 0) {
    close(fd);
    shm_unlink(name->c_str());
    return absl::ResourceExhaustedError(
        absl::StrCat("reserving ", bytes, " bytes in ", *name, ": ", ErrnoText(e)));
  }
  return fd;
}

// The other ranks: rank 0's file, once it published it.
absl::StatusOr<int> OpenFile(store::Store& scope, const std::string& key, size_t bytes,
                             const std::string& who, absl::Duration timeout, std::string* name) {
  absl::StatusOr<std::string> published = scope.Get(key, timeout);
  if (!published.ok()) {
    if (published.status().code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::DeadlineExceededError(
          absl::StrCat(who, ": rank(s) [0] never published the shared-memory file within ",
                       absl::FormatDuration(timeout)));
    }
    return absl::UnavailableError(absl::StrCat(who, ": ", published.status().message()));
  }
  if (absl::StartsWith(*published, "error:")) {
    return absl::ResourceExhaustedError(absl::StrCat(
        who, ": rank 0 could not create the shared-memory file: ", published->substr(6)));
  }
  if (!absl::StartsWith(*published, "ok:")) {
    return absl::InternalError(absl::StrCat(who, ": unexpected record '", *published, "'"));
  }
  *name = published->substr(3);
  const int fd = shm_open(name->c_str(), O_RDWR, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat(who, ": shm_open(", *name, "): ", ErrnoText(errno),
                     " (is rank 0 on this host, in this IPC namespace?)"));
  }
  struct stat st = {};
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != bytes) {
    close(fd);
    return absl::InternalError(absl::StrCat(who, ": shared-memory file ", *name, " has ",
                                            st.st_size, " bytes, expected ", bytes));
  }
  return fd;
}

}  // namespace

absl::StatusOr<SharedMapping> MapGroupFile(store::Store& scope, const std::string& key, int rank,
                                           int size, const std::string& who, size_t bytes,
                                           absl::Duration timeout,
                                           absl::FunctionRef<void(char* base)> init) {
  SharedMapping m;
  m.bytes = bytes;
  absl::StatusOr<int> fd;
  if (rank == 0) {
    fd = CreateFile(bytes, &m.name);
    if (!fd.ok()) {
      // Tell the others, so every rank fails the same way (and the caller can fall back).
      scope.Set(key, absl::StrCat("error:", fd.status().message())).IgnoreError();
      return absl::ResourceExhaustedError(absl::StrCat(who, ": ", fd.status().message()));
    }
  } else {
    fd = OpenFile(scope, key, bytes, who, timeout, &m.name);
    if (!fd.ok()) return fd.status();
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
  const int mmap_errno = errno;
  close(*fd);
  if (base == MAP_FAILED) {
    shm_unlink(m.name.c_str());
    return absl::UnavailableError(
        absl::StrCat(who, ": mmap of ", m.name, ": ", ErrnoText(mmap_errno)));
  }
  m.base = static_cast<char*>(base);
  if (rank == 0) {
    init(m.base);
    std::atomic_thread_fence(std::memory_order_release);  // the store's Set publishes it
    if (absl::Status s = scope.Set(key, absl::StrCat("ok:", m.name)); !s.ok()) {
      shm_unlink(m.name.c_str());
      munmap(m.base, bytes);
      return absl::UnavailableError(absl::StrCat(who, ": ", s.message()));
    }
  }

  // Everyone maps before anyone unlinks; then nothing is left behind whatever happens next.
  std::vector<std::string> keys;
  for (int r = 0; r < size; ++r) keys.push_back(absl::StrCat(key, "/mapped/", r));
  absl::Status s = scope.Set(keys[rank], "1");
  if (s.ok()) s = scope.Wait(keys, timeout);
  shm_unlink(m.name.c_str());  // ENOENT once another rank did it
  if (s.ok()) return m;
  munmap(m.base, bytes);
  std::vector<int> absent;
  for (int r = 0; r < size; ++r) {
    if (!scope.Get(keys[r], absl::ZeroDuration()).ok()) absent.push_back(r);
  }
  if (s.code() == absl::StatusCode::kDeadlineExceeded || !absent.empty()) {
    return absl::DeadlineExceededError(absl::StrCat(who, ": rank(s) [", absl::StrJoin(absent, ", "),
                                                    "] never joined within ",
                                                    absl::FormatDuration(timeout)));
  }
  return absl::UnavailableError(absl::StrCat(who, ": ", s.message()));
}

}  // namespace dstrain::comm::shm_internal
