#include "tests/fuzz/memory_env.h"

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace dstrain::fuzz {
namespace {

absl::Status ReadOnly(const std::string& path) {
  return absl::PermissionDeniedError(absl::StrCat(path, ": read-only memory env"));
}

class MemoryFile final : public env::SequentialFile {
 public:
  explicit MemoryFile(absl::string_view data) : data_(data) {}
  absl::StatusOr<size_t> Read(size_t n, char* scratch) override {
    const size_t k = std::min(n, data_.size());
    if (k > 0) std::memcpy(scratch, data_.data(), k);
    data_.remove_prefix(k);
    return k;
  }

 private:
  absl::string_view data_;  // the env's string: the env outlives its files
};

}  // namespace

void MemoryEnv::AddFile(const std::string& path, std::string data) {
  for (std::string d = env::Dirname(path); dirs_.insert(d).second; d = env::Dirname(d)) {
  }
  files_[path] = std::move(data);
}

absl::StatusOr<std::unique_ptr<env::WritableFile>> MemoryEnv::NewWritableFile(
    const std::string& path) {
  return ReadOnly(path);
}

absl::StatusOr<std::unique_ptr<env::SequentialFile>> MemoryEnv::NewSequentialFile(
    const std::string& path) {
  const auto it = files_.find(path);
  if (it == files_.end()) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  return std::make_unique<MemoryFile>(it->second);
}

bool MemoryEnv::FileExists(const std::string& path) {
  return files_.count(path) > 0 || dirs_.count(path) > 0;
}

bool MemoryEnv::IsDirectory(const std::string& path) { return dirs_.count(path) > 0; }

absl::StatusOr<std::vector<std::string>> MemoryEnv::GetChildren(const std::string& dir) {
  if (dirs_.count(dir) == 0) return absl::NotFoundError(absl::StrCat(dir, ": no such directory"));
  const std::string prefix = dir == "/" ? dir : absl::StrCat(dir, "/");
  std::set<std::string> names;
  const auto add = [&](const std::string& path) {
    absl::string_view rest = path;
    if (path == dir || !absl::ConsumePrefix(&rest, prefix)) return;
    names.insert(std::string(rest.substr(0, rest.find('/'))));
  };
  for (const auto& [path, data] : files_) add(path);
  for (const std::string& path : dirs_) add(path);
  return std::vector<std::string>(names.begin(), names.end());
}

absl::StatusOr<uint64_t> MemoryEnv::GetFileSize(const std::string& path) {
  const auto it = files_.find(path);
  if (it == files_.end()) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  return it->second.size();
}

absl::Status MemoryEnv::CreateDir(const std::string& dir) { return ReadOnly(dir); }
absl::Status MemoryEnv::CreateDirs(const std::string& dir) { return ReadOnly(dir); }
absl::Status MemoryEnv::RemoveFile(const std::string& path) { return ReadOnly(path); }
absl::Status MemoryEnv::RemoveDirRecursively(const std::string& dir) { return ReadOnly(dir); }
absl::Status MemoryEnv::RenameFile(const std::string& from, const std::string&) {
  return ReadOnly(from);
}
absl::Status MemoryEnv::SyncDir(const std::string& dir) { return ReadOnly(dir); }

int AddFilesFromInput(absl::string_view input, const std::string& root, MemoryEnv* env) {
  constexpr absl::string_view kMark = "=== ";
  // Every file starts at the beginning of the input or right after a newline.
  size_t start = input.substr(0, kMark.size()) == kMark ? 0 : input.find(absl::StrCat("\n", kMark));
  if (start != 0 && start != absl::string_view::npos) ++start;
  int added = 0;
  while (start != absl::string_view::npos) {
    const size_t name_begin = start + kMark.size();
    const size_t name_end = input.find('\n', name_begin);
    if (name_end == absl::string_view::npos) break;
    const absl::string_view name = input.substr(name_begin, name_end - name_begin);
    size_t next = input.find(absl::StrCat("\n", kMark), name_end);
    const absl::string_view data =
        input.substr(name_end + 1, next == absl::string_view::npos ? absl::string_view::npos
                                                                   : next - name_end - 1);
    if (!name.empty()) {
      env->AddFile(env::JoinPath(root, name), std::string(data));
      ++added;
    }
    start = next == absl::string_view::npos ? next : next + 1;
  }
  return added;
}

}  // namespace dstrain::fuzz
