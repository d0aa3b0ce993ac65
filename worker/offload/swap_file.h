// Where a rank's swapped state lives on disk: the rank's directory under the job's nvme_path
// (checked before anything is written), its O_DIRECT files, and the bandwidth self-test logged at
// start (docs/offload.md, "Files").
//
//   DT_ASSIGN_OR_RETURN(auto dir, SwapDir::Prepare(nvme_path, "job-7", rank, bytes_needed));
//   DT_ASSIGN_OR_RETURN(auto file, SwapFile::Create(dir->Join("optimizer.swp"), bytes));
//   engine->Write(file->ref(), 0, buf, n);
//   // both are removed when they go out of scope: the job's end or its cancellation
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/offload/swap_engine.h"
#include "worker/tensor/allocator.h"

namespace dstrain::offload {

class SwapDir {
 public:
  struct Options {
    // open(2), access(2) and statfs(2)'s f_type, replaceable so a test can play a file system
    // that refuses O_DIRECT, a directory root cannot write to, or tmpfs.
    std::function<int(const char* path, int flags, mode_t mode)> open_file;
    std::function<int(const char* path, int mode)> access_path;
    std::function<int64_t(const char* path)> fs_type;  // -1: statfs failed
  };
  // Checks `nvme_path` — it exists, is a directory, is writable, is not memory (tmpfs, ramfs:
  // state moved there would stay in memory), takes O_DIRECT files and has `bytes_needed` bytes
  // free — and creates <nvme_path>/dstrain-<job>/rank<rank>, held with a lock
  // so that two live runs of one job and rank cannot share it (a directory left by a killed run
  // is removed first). Errors name the path and, for space, the bytes needed and free:
  // kNotFound, kFailedPrecondition (not a directory, no O_DIRECT, in use), kPermissionDenied,
  // kResourceExhausted.
  static absl::StatusOr<std::unique_ptr<SwapDir>> Prepare(const std::string& nvme_path,
                                                          const std::string& job, int rank,
                                                          int64_t bytes_needed,
                                                          Options options = {});
  ~SwapDir();  // removes the directory, its files and the lock

  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  SwapDir(std::string path, std::string lock_path, int lock_fd)
      : path_(std::move(path)), lock_path_(std::move(lock_path)), lock_fd_(lock_fd) {}
  std::string path_, lock_path_;
  int lock_fd_;
};

// A file opened O_DIRECT for the swap engine, its blocks allocated up front so a full disk shows
// at creation and not mid-step. Reads of blocks never written return zeros (fallocate's
// unwritten extents). Removed when destroyed.
class SwapFile {
 public:
  static absl::StatusOr<std::unique_ptr<SwapFile>> Create(const std::string& path, int64_t bytes);
  ~SwapFile();
  FileRef ref() const { return {fd_, path_}; }
  int64_t size() const { return size_; }

 private:
  SwapFile(std::string path, int fd, int64_t size) : path_(std::move(path)), fd_(fd), size_(size) {}
  std::string path_;
  int fd_;
  int64_t size_;
};

// Writes and reads back `bytes` (rounded to kIoAlign) in `dir` through `engine`, checking the
// bytes, and returns the bandwidths in MB/s (10^6 bytes), for the log line at start.
struct Bandwidth {
  int64_t bytes = 0;
  double write_mb_s = 0, read_mb_s = 0;
};
absl::StatusOr<Bandwidth> MeasureBandwidth(SwapEngine& engine, const SwapDir& dir, int64_t bytes,
                                           tensor::Allocator* host);

}  // namespace dstrain::offload
