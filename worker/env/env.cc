#include "worker/env/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace dstrain::env {
namespace {

// "<op> <path>: <strerror>" with the code errno maps to (ENOENT -> kNotFound, ENOSPC ->
// kResourceExhausted, ...), so callers can branch on the code and people can read the message.
absl::Status PosixError(absl::string_view op, absl::string_view path, int err) {
  char buf[256];
  // GNU strerror_r returns a pointer that may or may not be `buf`.
  const char* text = strerror_r(err, buf, sizeof(buf));
  return absl::Status(absl::ErrnoToStatusCode(err), absl::StrCat(op, " ", path, ": ", text));
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  // Writes straight to the fd: checkpoint shards are appended in large pieces, so a user-space
  // buffer would only add a copy. Every kWritebackBytes the written range is handed to the disk
  // at once (sync_file_range, which does not wait): the device then writes while the next bytes
  // are copied, instead of all of them in the final fsync (RocksDB's bytes_per_sync).
  absl::Status Append(absl::string_view data) override {
    if (fd_ < 0) return Closed();
    const char* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, std::min(left, kWritebackBytes));
      if (n < 0) {
        if (errno == EINTR) continue;
        return PosixError("write", path_, errno);
      }
      p += n;
      left -= static_cast<size_t>(n);
      offset_ += static_cast<uint64_t>(n);
      if (offset_ - writeback_from_ >= kWritebackBytes) {
        // Advice only: Sync() still makes everything durable, so a failure here changes nothing.
        (void)::sync_file_range(fd_, writeback_from_, offset_ - writeback_from_,
                                SYNC_FILE_RANGE_WRITE);
        writeback_from_ = offset_;
      }
    }
    return absl::OkStatus();
  }

  absl::Status Flush() override { return fd_ < 0 ? Closed() : absl::OkStatus(); }

  absl::Status Sync() override {
    if (fd_ < 0) return Closed();
    if (::fsync(fd_) != 0) return PosixError("fsync", path_, errno);
    return absl::OkStatus();
  }

  absl::Status Close() override {
    if (fd_ < 0) return Closed();
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return PosixError("close", path_, errno);
    return absl::OkStatus();
  }

 private:
  absl::Status Closed() const {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": file already closed"));
  }

  static constexpr size_t kWritebackBytes = size_t{8} << 20;

  const std::string path_;
  int fd_;
  uint64_t offset_ = 0;          // bytes written so far
  uint64_t writeback_from_ = 0;  // start of the range not yet handed to the disk
};

class PosixSequentialFile final : public SequentialFile {
 public:
  PosixSequentialFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixSequentialFile() override { ::close(fd_); }

  absl::StatusOr<size_t> Read(size_t n, char* scratch) override {
    while (true) {
      const ssize_t r = ::read(fd_, scratch, n);
      if (r >= 0) return static_cast<size_t>(r);
      if (errno != EINTR) return PosixError("read", path_, errno);
    }
  }

  absl::Status Skip(uint64_t n) override {
    if (n > static_cast<uint64_t>(std::numeric_limits<off_t>::max())) {
      return PosixError("seek", path_, EOVERFLOW);
    }
    if (::lseek(fd_, static_cast<off_t>(n), SEEK_CUR) < 0) return PosixError("seek", path_, errno);
    return absl::OkStatus();
  }

 private:
  const std::string path_;
  const int fd_;
};

}  // namespace

absl::Status SequentialFile::Skip(uint64_t n) {
  std::vector<char> scratch(std::min<uint64_t>(n, uint64_t{1} << 20));
  while (n > 0) {
    DT_ASSIGN_OR_RETURN(const size_t got,
                        Read(std::min<uint64_t>(n, scratch.size()), scratch.data()));
    if (got == 0) return absl::OkStatus();  // the end: the next Read says so
    n -= got;
  }
  return absl::OkStatus();
}

std::string JoinPath(absl::string_view dir, absl::string_view name) {
  if (dir.empty()) return std::string(name);
  if (dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

std::string Dirname(absl::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  const size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

absl::StatusOr<std::string> Env::ReadFileToString(const std::string& path, uint64_t max_bytes) {
  DT_ASSIGN_OR_RETURN(std::unique_ptr<SequentialFile> file, NewSequentialFile(path));
  // Read straight into the result, sized from the file when its size is known (checkpoint
  // shards are hundreds of MB: growing a string by appends would copy them again and again), one
  // byte over so the end shows without growing it; grown by at most 8 MiB at a time otherwise
  // (a small file, a manifest, costs its own size, not a chunk).
  constexpr uint64_t kChunk = 8 << 20;
  std::string out;
  absl::StatusOr<uint64_t> size = GetFileSize(path);
  out.resize(size.ok() && *size <= max_bytes ? *size + 1 : std::min(kChunk, max_bytes) + 1);
  size_t used = 0;
  while (true) {
    if (used == out.size()) out.resize(used + std::min<uint64_t>(kChunk, max_bytes - used) + 1);
    DT_ASSIGN_OR_RETURN(size_t n, file->Read(out.size() - used, out.data() + used));
    if (n == 0) break;
    used += n;
    if (used > max_bytes) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": larger than the limit of ", max_bytes, " bytes"));
    }
  }
  out.resize(used);
  return out;
}

absl::Status Env::WriteStringToFile(const std::string& path, absl::string_view data, bool sync) {
  DT_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, NewWritableFile(path));
  DT_RETURN_IF_ERROR(file->Append(data));
  if (sync) DT_RETURN_IF_ERROR(file->Sync());
  return file->Close();
}

namespace {

// Steps 1 and 2 of WriteFileAtomically.
absl::Status WriteSyncAndClose(Env* env, const std::string& path,
                               absl::Span<const absl::string_view> pieces) {
  DT_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, env->NewWritableFile(path));
  for (absl::string_view piece : pieces) DT_RETURN_IF_ERROR(file->Append(piece));
  DT_RETURN_IF_ERROR(file->Sync());
  return file->Close();
}

}  // namespace

absl::Status WriteFileAtomically(Env* env, const std::string& path,
                                 absl::Span<const absl::string_view> pieces) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  absl::Status status = WriteSyncAndClose(env, tmp, pieces);
  if (status.ok()) status = env->RenameFile(tmp, path);
  if (!status.ok()) {
    // `path` is untouched. The temporary holds a part at most: it goes, and the first error is
    // the one to report.
    if (env->FileExists(tmp)) env->RemoveFile(tmp).IgnoreError();
    return status;
  }
  return env->SyncDir(Dirname(path));
}

absl::Status WriteFileAtomically(Env* env, const std::string& path, absl::string_view data) {
  return WriteFileAtomically(env, path, absl::Span<const absl::string_view>(&data, 1));
}

PosixEnv* PosixEnv::Default() {
  static PosixEnv* const env = new PosixEnv();
  return env;
}

absl::StatusOr<std::unique_ptr<WritableFile>> PosixEnv::NewWritableFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return PosixError("open for writing", path, errno);
  return std::make_unique<PosixWritableFile>(path, fd);
}

absl::StatusOr<std::unique_ptr<SequentialFile>> PosixEnv::NewSequentialFile(
    const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return PosixError("open for reading", path, errno);
  // Read front to back: a larger read-ahead window (advice only; failure changes nothing).
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  return std::make_unique<PosixSequentialFile>(path, fd);
}

bool PosixEnv::FileExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

bool PosixEnv::IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

absl::StatusOr<std::vector<std::string>> PosixEnv::GetChildren(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return PosixError("opendir", dir, errno);
  std::vector<std::string> names;
  while (true) {
    errno = 0;
    const struct dirent* e = ::readdir(d);
    if (e == nullptr) {
      const int err = errno;
      ::closedir(d);
      if (err != 0) return PosixError("readdir", dir, err);
      return names;
    }
    const absl::string_view name(e->d_name);
    if (name != "." && name != "..") names.emplace_back(name);
  }
}

absl::StatusOr<uint64_t> PosixEnv::GetFileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return PosixError("stat", path, errno);
  return static_cast<uint64_t>(st.st_size);
}

absl::Status PosixEnv::CreateDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0) return PosixError("mkdir", dir, errno);
  return absl::OkStatus();
}

absl::Status PosixEnv::CreateDirs(const std::string& dir) {
  if (dir.empty() || IsDirectory(dir)) return absl::OkStatus();
  const std::string parent = Dirname(dir);
  if (parent != dir) DT_RETURN_IF_ERROR(CreateDirs(parent));
  // Another process may create it between the check and the mkdir; that is success too.
  if (::mkdir(dir.c_str(), 0755) != 0 && !(errno == EEXIST && IsDirectory(dir))) {
    return PosixError("mkdir", dir, errno);
  }
  return absl::OkStatus();
}

absl::Status PosixEnv::RemoveFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0) return PosixError("unlink", path, errno);
  return absl::OkStatus();
}

absl::Status PosixEnv::RemoveDirRecursively(const std::string& dir) {
  DT_ASSIGN_OR_RETURN(std::vector<std::string> children, GetChildren(dir));
  for (const std::string& name : children) {
    const std::string path = JoinPath(dir, name);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return PosixError("lstat", path, errno);
    if (S_ISDIR(st.st_mode)) {
      DT_RETURN_IF_ERROR(RemoveDirRecursively(path));
    } else {
      DT_RETURN_IF_ERROR(RemoveFile(path));
    }
  }
  if (::rmdir(dir.c_str()) != 0) return PosixError("rmdir", dir, errno);
  return absl::OkStatus();
}

absl::Status PosixEnv::RenameFile(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return PosixError("rename", absl::StrCat(from, " -> ", to), errno);
  }
  return absl::OkStatus();
}

absl::Status PosixEnv::SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return PosixError("open directory", dir, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return PosixError("fsync directory", dir, err);
  return absl::OkStatus();
}

}  // namespace dstrain::env
