#include "worker/offload/swap_file.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status/status_macros.h"
#include "worker/env/env.h"
#include "worker/offload/aligned_buffer.h"

namespace dstrain::offload {
namespace {

std::string SafeName(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    out.push_back(ok ? c : '_');
  }
  if (out.empty() || out[0] == '.') out.insert(out.begin(), '_');
  return out;
}

absl::Status Errno(const std::string& what, const std::string& path) {
  const int err = errno;
  const std::string text = absl::StrCat(path, ": ", what, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(text);
  if (err == EACCES || err == EPERM || err == EROFS) return absl::PermissionDeniedError(text);
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(text);
  return absl::InternalError(text);
}

}  // namespace

absl::StatusOr<std::unique_ptr<SwapDir>> SwapDir::Prepare(const std::string& nvme_path,
                                                          const std::string& job, int rank,
                                                          int64_t bytes_needed, Options options) {
  std::function<int(const char*, int, mode_t)> open_file = options.open_file;
  if (!open_file) open_file = [](const char* p, int f, mode_t m) { return ::open(p, f, m); };
  std::function<int(const char*, int)> access_path = options.access_path;
  if (!access_path) access_path = [](const char* p, int mode) { return ::access(p, mode); };
  std::function<int64_t(const char*)> fs_type = options.fs_type;
  if (!fs_type) {
    fs_type = [](const char* p) -> int64_t {
      struct statfs fs;
      return ::statfs(p, &fs) == 0 ? static_cast<int64_t>(fs.f_type) : -1;
    };
  }
  struct stat st;
  if (::stat(nvme_path.c_str(), &st) != 0) return Errno("nvme_path", nvme_path);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(nvme_path, ": nvme_path is not a directory"));
  }
  if (access_path(nvme_path.c_str(), W_OK | X_OK) != 0) return Errno("not writable", nvme_path);
  // Memory-backed file systems take O_DIRECT on recent kernels, but their pages are memory: the
  // offloaded state would use as much of it as before, and more with the swap's buffers.
  const int64_t type = fs_type(nvme_path.c_str());
  if (type == TMPFS_MAGIC || type == RAMFS_MAGIC) {
    return absl::FailedPreconditionError(absl::StrCat(
        nvme_path, ": nvme_path is on ", type == TMPFS_MAGIC ? "tmpfs" : "ramfs",
        ", which is memory: offloading there frees none; put nvme_path on a local disk"));
  }
  const std::string job_dir = env::JoinPath(nvme_path, "dstrain-" + SafeName(job));
  const std::string lock_path = absl::StrCat(job_dir, ".rank", rank, ".lock");
  const int lock_fd = open_file(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0) return Errno("creating the lock file", lock_path);
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock_fd);
    return absl::FailedPreconditionError(absl::StrCat(lock_path, ": another live run of job \"",
                                                      job, "\" rank ", rank,
                                                      " swaps into this nvme_path"));
  }
  std::unique_ptr<SwapDir> dir(
      new SwapDir(env::JoinPath(job_dir, absl::StrCat("rank", rank)), lock_path, lock_fd));
  env::PosixEnv* fs = env::PosixEnv::Default();
  if (fs->FileExists(dir->path_)) DT_RETURN_IF_ERROR(fs->RemoveDirRecursively(dir->path_));
  DT_RETURN_IF_ERROR(fs->CreateDirs(dir->path_));
  // The space check counts what a killed run left behind as free: it was removed just now.
  struct statvfs vfs;
  if (::statvfs(dir->path_.c_str(), &vfs) != 0) return Errno("statvfs", dir->path_);
  const int64_t free_bytes =
      static_cast<int64_t>(vfs.f_bavail) * static_cast<int64_t>(vfs.f_frsize);
  if (free_bytes < bytes_needed) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s: nvme_path has %d bytes free, the optimizer state needs %d bytes",
                        nvme_path, free_bytes, bytes_needed));
  }
  // O_DIRECT: refused (EINVAL) by file systems without it; the swap engine needs it so the state
  // does not pass through (and crowd) the page cache.
  const std::string probe = dir->Join("direct-io.probe");
  const int fd = open_file(probe.c_str(), O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EINVAL) {
      return absl::FailedPreconditionError(
          absl::StrCat(nvme_path,
                       ": the file system does not support O_DIRECT (tmpfs on older kernels, some "
                       "network file systems); put nvme_path on a local disk"));
    }
    return Errno("creating a file", probe);
  }
  ::close(fd);
  ::unlink(probe.c_str());
  return dir;
}

SwapDir::~SwapDir() {
  env::PosixEnv* fs = env::PosixEnv::Default();
  (void)fs->RemoveDirRecursively(path_);
  // The job's directory goes with its last rank's (rmdir fails while another rank's remains).
  ::rmdir(env::Dirname(path_).c_str());
  ::unlink(lock_path_.c_str());
  ::close(lock_fd_);
}

absl::StatusOr<std::unique_ptr<SwapFile>> SwapFile::Create(const std::string& path, int64_t bytes) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("creating the swap file", path);
  std::unique_ptr<SwapFile> file(new SwapFile(path, fd, AlignUp(bytes)));
  if (file->size_ > 0) {
    const int r = ::posix_fallocate(fd, 0, file->size_);
    if (r != 0) {
      errno = r;
      return Errno(absl::StrCat("allocating ", file->size_, " bytes"), path);
    }
  }
  return file;
}

SwapFile::~SwapFile() {
  ::close(fd_);
  ::unlink(path_.c_str());
}

absl::StatusOr<Bandwidth> MeasureBandwidth(SwapEngine& engine, const SwapDir& dir, int64_t bytes,
                                           tensor::Allocator* host) {
  Bandwidth bw;
  bw.bytes = AlignUp(std::max<int64_t>(bytes, kIoAlign));
  DT_ASSIGN_OR_RETURN(auto file, SwapFile::Create(dir.Join("bandwidth.probe"), bw.bytes));
  DT_ASSIGN_OR_RETURN(AlignedBuffer buf,
                      AlignedBuffer::Allocate(host, bw.bytes, tensor::MemoryCategory::kOther));
  for (int64_t i = 0; i < bw.bytes; i += 8) {
    const uint64_t v = static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull;
    std::memcpy(buf.data() + i, &v, 8);
  }
  absl::Time t0 = absl::Now();
  DT_RETURN_IF_ERROR(engine.Wait(engine.Write(file->ref(), 0, buf.data(), bw.bytes)));
  if (::fdatasync(file->ref().fd) != 0) return Errno("fdatasync", file->ref().path);
  bw.write_mb_s = bw.bytes / 1e6 / std::max(1e-9, absl::ToDoubleSeconds(absl::Now() - t0));
  DT_ASSIGN_OR_RETURN(AlignedBuffer back,
                      AlignedBuffer::Allocate(host, bw.bytes, tensor::MemoryCategory::kOther));
  t0 = absl::Now();
  DT_RETURN_IF_ERROR(engine.Wait(engine.Read(file->ref(), 0, back.data(), bw.bytes)));
  bw.read_mb_s = bw.bytes / 1e6 / std::max(1e-9, absl::ToDoubleSeconds(absl::Now() - t0));
  if (std::memcmp(buf.data(), back.data(), static_cast<size_t>(bw.bytes)) != 0) {
    return absl::DataLossError(
        absl::StrCat(file->ref().path, ": the bytes read back differ from those written"));
  }
  return bw;
}

}  // namespace dstrain::offload
