// A read-only Env over files held in memory, for fuzz targets that read what an Env holds
// (checkpoints) without touching the disk: one input builds a whole directory tree in
// microseconds, and nothing is left behind. Directories are implied by the files' paths.
// Every mutating call fails with kPermissionDenied.
//
// Thread-safety: const after the files are added; not for concurrent AddFile.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "worker/env/env.h"

namespace dstrain::fuzz {

class MemoryEnv final : public env::Env {
 public:
  // Adds (or replaces) the file at absolute path `path`, creating its directories.
  void AddFile(const std::string& path, std::string data);

  absl::StatusOr<std::unique_ptr<env::WritableFile>> NewWritableFile(
      const std::string& path) override;
  absl::StatusOr<std::unique_ptr<env::SequentialFile>> NewSequentialFile(
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
  std::map<std::string, std::string> files_;
  std::set<std::string> dirs_{"/"};
};

// Splits a fuzz input into files: each starts with a line "=== NAME\n" and runs to the next such
// line (or the end); bytes before the first are ignored. NAME is taken relative to `root` as it
// stands (so "../x" or "a//b" are left for the code under test to meet). Returns the files added.
int AddFilesFromInput(absl::string_view input, const std::string& root, MemoryEnv* env);

}  // namespace dstrain::fuzz
