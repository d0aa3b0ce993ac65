// Env: the one seam through which checkpoints (and later NVMe swap) touch the file system, so tests
// can swap in FaultInjectionEnv and inject full disks, torn writes and crashes
// (docs/checkpoints.md, "The commit protocol").
//
// The shape follows LevelDB's Env: a small abstract class of file-system operations plus file
// objects for streaming I/O. Every call returns an absl::Status whose message names the path it
// failed on. Durability is explicit, because the checkpoint commit protocol depends on it:
//   - bytes appended to a WritableFile are durable only after Sync() returns OK;
//   - a file or directory created, or a rename, is durable only after SyncDir() of the directory
//     holding the new name returns OK (the POSIX rule: fsync of a file does not persist its
//     directory entry).
// Paths are plain strings joined with '/'; there is no working-directory magic. Env objects are
// safe to share between threads; one WritableFile or SequentialFile is used by one thread at a
// time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace dstrain::env {

// A file opened for writing from offset 0 (an existing file is truncated).
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  WritableFile(const WritableFile&) = delete;
  WritableFile& operator=(const WritableFile&) = delete;

  virtual absl::Status Append(absl::string_view data) = 0;
  // Hands buffered bytes to the operating system (not durable yet).
  virtual absl::Status Flush() = 0;
  // Makes every byte appended so far durable (fsync).
  virtual absl::Status Sync() = 0;
  // Flushes and closes; does not sync. Calls after Close fail with kFailedPrecondition. The
  // destructor closes a file left open and ignores the result.
  virtual absl::Status Close() = 0;

 protected:
  WritableFile() = default;
};

// A file read from the start, in order.
class SequentialFile {
 public:
  virtual ~SequentialFile() = default;
  SequentialFile(const SequentialFile&) = delete;
  SequentialFile& operator=(const SequentialFile&) = delete;

  // Reads up to `n` bytes into `scratch` and returns how many were read; 0 means end of file.
  virtual absl::StatusOr<size_t> Read(size_t n, char* scratch) = 0;
  // Moves `n` bytes forward without reading them, so a loader that needs a few ranges of a large
  // file touches only those. Skipping past the end is not an error here; the next Read returns 0.
  // This default reads and discards; a file that can seek overrides it.
  virtual absl::Status Skip(uint64_t n);

 protected:
  SequentialFile() = default;
};

class Env {
 public:
  virtual ~Env() = default;
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;

  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) = 0;
  virtual absl::StatusOr<std::unique_ptr<SequentialFile>> NewSequentialFile(
      const std::string& path) = 0;

  // True when `path` names an existing file or directory.
  virtual bool FileExists(const std::string& path) = 0;
  virtual bool IsDirectory(const std::string& path) = 0;
  // Names (not paths) of the entries of `dir`, without "." and "..", in no particular order.
  virtual absl::StatusOr<std::vector<std::string>> GetChildren(const std::string& dir) = 0;
  virtual absl::StatusOr<uint64_t> GetFileSize(const std::string& path) = 0;

  // Creates one directory; kAlreadyExists when it exists.
  virtual absl::Status CreateDir(const std::string& dir) = 0;
  // Creates `dir` and any missing parents; OK when it already exists.
  virtual absl::Status CreateDirs(const std::string& dir) = 0;
  virtual absl::Status RemoveFile(const std::string& path) = 0;
  // Removes a directory and everything under it (symbolic links are removed, not followed).
  virtual absl::Status RemoveDirRecursively(const std::string& dir) = 0;
  // Atomically renames `from` to `to` (rename(2)): a file replaces an existing file `to`; a
  // directory may replace only an empty directory.
  virtual absl::Status RenameFile(const std::string& from, const std::string& to) = 0;
  // Makes the entries of `dir` durable (fsync of the directory): creations, renames, removals.
  virtual absl::Status SyncDir(const std::string& dir) = 0;

  // Reads a whole file; kFailedPrecondition naming the file when it holds more than `max_bytes`
  // (so a corrupt length or a wrong path cannot exhaust memory).
  absl::StatusOr<std::string> ReadFileToString(const std::string& path, uint64_t max_bytes);
  // Creates (or truncates) `path` holding `data`, then syncs and closes it when `sync` is set.
  absl::Status WriteStringToFile(const std::string& path, absl::string_view data, bool sync);

 protected:
  Env() = default;
};

// Replaces the file `path` by one holding `pieces`, one after the other, so that a crash at any
// moment leaves either the old file (or no file, where there was none) or the whole new one
// under `path`, never a part. The steps, each through `env`:
//   1. create (or truncate) the temporary file <path>.tmp, in the same directory so that the
//      rename below cannot cross file systems, and append the pieces;
//   2. Sync() and Close() it: the new bytes are durable before any name points at them;
//   3. RenameFile() it over `path`: readers see the old file or the new one, never a mix;
//   4. SyncDir() the directory holding `path`: the rename is durable.
// OK only after step 4: the new contents then survive a crash. An error in steps 1 to 3 leaves
// `path` as it was and removes the temporary file (a crash of the machine instead may leave it;
// the next write to `path` replaces it). An error in step 4 leaves the new file in place but
// perhaps not durable.
// One writer per `path` at a time: concurrent writers would share the temporary file.
absl::Status WriteFileAtomically(Env* env, const std::string& path,
                                 absl::Span<const absl::string_view> pieces);
absl::Status WriteFileAtomically(Env* env, const std::string& path, absl::string_view data);

// Joins two path pieces with exactly one '/'.
std::string JoinPath(absl::string_view dir, absl::string_view name);
// The directory holding `path` ("." for a bare name, "/" for a top-level entry).
std::string Dirname(absl::string_view path);

// The real file system through POSIX calls. Errors carry the operation, the path and strerror.
class PosixEnv final : public Env {
 public:
  PosixEnv() = default;
  // A process-wide instance; never destroyed.
  static PosixEnv* Default();

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<SequentialFile>> NewSequentialFile(
      const std::string& path) override;
  bool FileExists(const std::string& path) override;
  bool IsDirectory(const std::string& path) override;
  absl::StatusOr<std::vector<std::string>> GetChildren(const std::string& dir) override;
  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override;
  absl::Status CreateDir(const std::string& dir) override;
  absl::Status CreateDirs(const std::string& dir) override;
  absl::Status RemoveFile(const std::string& path) override;
  absl::Status RemoveDirRecursively(const std::string& dir) override;
  absl::Status RenameFile(const std::string& from, const std::string& to) override;
  absl::Status SyncDir(const std::string& dir) override;
};

}  // namespace dstrain::env
