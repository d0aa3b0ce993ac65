// FaultInjectionEnv: an Env decorator for tests that fails the way disks and machines do, so the
// checkpoint commit protocol can be tested against full disks, torn writes and crashes at every
// step (docs/checkpoints.md, "The commit protocol"). Reads always pass through to the wrapped Env.
//
// Crash model (deliberately simple; every rule is tested in fault_injection_env_test.cc):
//   - Every mutating call counts as one operation: creating a file (NewWritableFile), Append,
//     Sync, Close, CreateDir, CreateDirs, RemoveFile, RemoveDirRecursively, RenameFile, SyncDir.
//     CrashAfter(n) lets n more operations succeed; operation n+1 crashes the "machine": it and
//     every later mutating call fail with kAborted, and the state that was not durable is dropped
//     (below). SimulateCrash() does the same at once, e.g. after a save returned.
//   - Data: a file written through this Env keeps only the bytes it held at its last successful
//     Sync (0 if never synced, also when NewWritableFile truncated an existing file).
//   - Names: creating a file or directory, and a rename, are durable only after SyncDir of the
//     directory holding the new name (both directories for a rename across directories). On a
//     crash the non-durable ones are undone newest first: created entries are removed, a rename
//     is reversed and a file it replaced gets its old contents back.
//   - I/O error without a crash: FailAfter(n, error) lets n more mutating operations succeed;
//     operation n+1 does nothing and fails with `error`'s code (its message prefixed with the
//     operation and path), and later operations work again, as after an EIO from one fsync.
//   - Removals are durable at once. (A real file system may resurrect an entry whose removal was
//     not synced; for checkpoints that only brings back garbage the reader already ignores.)
//   - Do not rename a file while it is open for writing through this Env.
// The wrapped Env must be a real one (PosixEnv over a test directory): rollback rewrites files
// through it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "worker/env/env.h"

namespace dstrain::env {

class FaultInjectionEnv final : public Env {
 public:
  // `base` must outlive this object.
  explicit FaultInjectionEnv(Env* base);

  // Disk full: once `bytes` bytes in all have been appended through this Env, an Append that would
  // go past the limit fails with kResourceExhausted naming the file and writes nothing.
  void SetDiskFullLimit(uint64_t bytes);
  // Torn write: `path` (as later passed to NewWritableFile) persists only its first `keep_bytes`;
  // the bytes after them are dropped while Append, Sync and Close all report success, as when a
  // device loses part of a write without telling anyone.
  void SetTornWrite(const std::string& path, uint64_t keep_bytes);
  // Lets `n` more mutating operations succeed; the next one crashes (see the header comment).
  void CrashAfter(int64_t n);
  // Lets `n` more mutating operations succeed; the next one fails with `error` (not OK) without a
  // crash (see the header comment).
  void FailAfter(int64_t n, absl::Status error);
  // Crashes now: drops everything not durable, then fails mutating calls with kAborted.
  absl::Status SimulateCrash();
  // The machine "reboots": mutating calls work again (no crash is armed).
  void Restart();

  int64_t mutating_ops() const;
  bool crashed() const;

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

 private:
  class File;
  friend class File;

  struct FileState {
    uint64_t size = 0;
    uint64_t synced = 0;
  };
  // A name change not yet made durable by SyncDir.
  struct Pending {
    enum Kind { kCreateFile, kCreateDir, kRename } kind;
    std::string path;                     // created entry, or the rename's source
    std::string to;                       // the rename's destination
    std::optional<std::string> replaced;  // contents of a file the rename replaced
    std::set<std::string> dirs;           // directories still to be synced
  };

  // Counts one mutating operation `op` on `path`; returns kAborted once crashed.
  absl::Status BeginOp(const char* op, const std::string& path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CrashLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Renames the keys of tracked files under `from` (the path itself or below it) to `to`.
  void MoveFileStates(const std::string& from, const std::string& to)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Called by File.
  absl::Status FileAppend(const std::string& path, absl::string_view data, WritableFile* base);
  absl::Status FileSync(const std::string& path, WritableFile* base);
  absl::Status FileClose(const std::string& path, WritableFile* base);

  Env* const base_;
  mutable absl::Mutex mu_;
  int64_t ops_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<int64_t> crash_at_op_ ABSL_GUARDED_BY(mu_);
  std::optional<int64_t> fail_at_op_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_with_ ABSL_GUARDED_BY(mu_);
  bool crashed_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<uint64_t> disk_limit_ ABSL_GUARDED_BY(mu_);
  uint64_t bytes_appended_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, uint64_t> torn_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, FileState> files_ ABSL_GUARDED_BY(mu_);
  std::vector<Pending> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dstrain::env
