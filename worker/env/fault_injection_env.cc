#include "worker/env/fault_injection_env.h"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace dstrain::env {
namespace {

// Directory names are compared as strings, so "a/b/" and "a/b" must be the same key.
std::string Normalize(absl::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  return std::string(path);
}

// `path` is `prefix` or lies below it.
bool IsUnder(const std::string& path, const std::string& prefix) {
  return path == prefix || (absl::StartsWith(path, prefix) && path.size() > prefix.size() &&
                            path[prefix.size()] == '/');
}

std::string Rebase(const std::string& path, const std::string& from, const std::string& to) {
  return IsUnder(path, from) ? to + path.substr(from.size()) : path;
}

bool IgnorableInRollback(const absl::Status& s) { return s.ok() || absl::IsNotFound(s); }

}  // namespace

class FaultInjectionEnv::File final : public WritableFile {
 public:
  File(FaultInjectionEnv* env, std::string path, std::unique_ptr<WritableFile> base)
      : env_(env), path_(std::move(path)), base_(std::move(base)) {}

  absl::Status Append(absl::string_view data) override {
    return env_->FileAppend(path_, data, base_.get());
  }
  absl::Status Flush() override { return base_->Flush(); }
  absl::Status Sync() override { return env_->FileSync(path_, base_.get()); }
  absl::Status Close() override { return env_->FileClose(path_, base_.get()); }

 private:
  FaultInjectionEnv* const env_;
  const std::string path_;
  const std::unique_ptr<WritableFile> base_;
};

FaultInjectionEnv::FaultInjectionEnv(Env* base) : base_(base) {}

void FaultInjectionEnv::SetDiskFullLimit(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  disk_limit_ = bytes;
}

void FaultInjectionEnv::SetTornWrite(const std::string& path, uint64_t keep_bytes) {
  absl::MutexLock lock(&mu_);
  torn_[Normalize(path)] = keep_bytes;
}

void FaultInjectionEnv::CrashAfter(int64_t n) {
  absl::MutexLock lock(&mu_);
  crash_at_op_ = ops_ + n + 1;
}

void FaultInjectionEnv::FailAfter(int64_t n, absl::Status error) {
  absl::MutexLock lock(&mu_);
  fail_at_op_ = ops_ + n + 1;
  fail_with_ = std::move(error);
}

absl::Status FaultInjectionEnv::SimulateCrash() {
  absl::MutexLock lock(&mu_);
  return CrashLocked();
}

void FaultInjectionEnv::Restart() {
  absl::MutexLock lock(&mu_);
  crashed_ = false;
  crash_at_op_.reset();
}

int64_t FaultInjectionEnv::mutating_ops() const {
  absl::MutexLock lock(&mu_);
  return ops_;
}

bool FaultInjectionEnv::crashed() const {
  absl::MutexLock lock(&mu_);
  return crashed_;
}

absl::Status FaultInjectionEnv::BeginOp(const char* op, const std::string& path) {
  const auto aborted = [&] {
    return absl::AbortedError(absl::StrCat(op, " ", path, ": simulated crash"));
  };
  if (crashed_) return aborted();
  ++ops_;
  if (crash_at_op_.has_value() && ops_ >= *crash_at_op_) {
    // The crash itself is the point of the test; a rollback failure would show up as a wrong file
    // system state in the test's checks, so it is not reported here.
    CrashLocked().IgnoreError();
    return aborted();
  }
  if (fail_at_op_.has_value() && ops_ == *fail_at_op_) {
    fail_at_op_.reset();
    return absl::Status(fail_with_.code(), absl::StrCat(op, " ", path, ": ", fail_with_.message(),
                                                        " (fault injection)"));
  }
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::CrashLocked() {
  crashed_ = true;
  absl::Status first_error;
  const auto note = [&first_error](const absl::Status& s) {
    if (!IgnorableInRollback(s) && first_error.ok()) first_error = s;
  };
  // Data first, at today's names; then names, newest first, so each undo sees the paths as they
  // were when its operation ran.
  for (auto& [path, state] : files_) {
    if (state.size == state.synced) continue;
    absl::StatusOr<std::string> data = base_->ReadFileToString(path, state.size + 1);
    note(data.status());
    if (data.ok()) {
      data->resize(std::min<uint64_t>(data->size(), state.synced));
      note(base_->WriteStringToFile(path, *data, /*sync=*/true));
    }
    state.size = state.synced;
  }
  for (auto it = pending_.rbegin(); it != pending_.rend(); ++it) {
    switch (it->kind) {
      case Pending::kCreateFile:
        note(base_->RemoveFile(it->path));
        files_.erase(it->path);
        break;
      case Pending::kCreateDir:
        note(base_->RemoveDirRecursively(it->path));
        break;
      case Pending::kRename:
        note(base_->RenameFile(it->to, it->path));
        MoveFileStates(it->to, it->path);
        if (it->replaced.has_value()) {
          note(base_->WriteStringToFile(it->to, *it->replaced, /*sync=*/true));
        }
        break;
    }
  }
  pending_.clear();
  return first_error;
}

void FaultInjectionEnv::MoveFileStates(const std::string& from, const std::string& to) {
  std::map<std::string, FileState> moved;
  for (auto it = files_.begin(); it != files_.end();) {
    if (IsUnder(it->first, from)) {
      moved[Rebase(it->first, from, to)] = it->second;
      it = files_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [path, state] : moved) files_[path] = state;
}

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewWritableFile(
    const std::string& path) {
  const std::string p = Normalize(path);
  absl::MutexLock lock(&mu_);
  DT_RETURN_IF_ERROR(BeginOp("create", p));
  const bool existed = base_->FileExists(p);
  DT_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> base_file, base_->NewWritableFile(p));
  files_[p] = FileState{};
  if (!existed) pending_.push_back({Pending::kCreateFile, p, "", std::nullopt, {Dirname(p)}});
  return std::make_unique<File>(this, p, std::move(base_file));
}

absl::Status FaultInjectionEnv::FileAppend(const std::string& path, absl::string_view data,
                                           WritableFile* base) {
  absl::MutexLock lock(&mu_);
  DT_RETURN_IF_ERROR(BeginOp("append", path));
  if (disk_limit_.has_value() && bytes_appended_ + data.size() > *disk_limit_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("write ", path, ": no space left on device (fault injection: ", *disk_limit_,
                     "-byte limit, ", bytes_appended_, " bytes used)"));
  }
  FileState& state = files_[path];
  absl::string_view kept = data;
  if (auto torn = torn_.find(path); torn != torn_.end()) {
    const uint64_t room = torn->second > state.size ? torn->second - state.size : 0;
    kept = data.substr(0, std::min<uint64_t>(room, data.size()));
  }
  DT_RETURN_IF_ERROR(base->Append(kept));
  bytes_appended_ += data.size();
  state.size += kept.size();
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::FileSync(const std::string& path, WritableFile* base) {
  absl::MutexLock lock(&mu_);
  DT_RETURN_IF_ERROR(BeginOp("sync", path));
  DT_RETURN_IF_ERROR(base->Sync());
  FileState& state = files_[path];
  state.synced = state.size;
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::FileClose(const std::string& path, WritableFile* base) {
  absl::MutexLock lock(&mu_);
  DT_RETURN_IF_ERROR(BeginOp("close", path));
  return base->Close();
}

absl::StatusOr<std::unique_ptr<SequentialFile>> FaultInjectionEnv::NewSequentialFile(
    const std::string& path) {
  return base_->NewSequentialFile(path);
}

bool FaultInjectionEnv::FileExists(const std::string& path) { return base_->FileExists(path); }

bool FaultInjectionEnv::IsDirectory(const std::string& path) { return base_->IsDirectory(path); }

absl::StatusOr<std::vector<std::string>> FaultInjectionEnv::GetChildren(const std::string& dir) {
  return base_->GetChildren(dir);
}

absl::StatusOr<uint64_t> FaultInjectionEnv::GetFileSize(const std::string& path) {
  return base_->GetFileSize(path);
}

absl::Status FaultInjectionEnv::CreateDir(const std::string& dir) {
  const std::string d = Normalize(dir);
  absl::MutexLock lock(&mu_);
  DT_RETURN_IF_ERROR(BeginOp("mkdir", d));
  DT_RETURN_IF_ERROR(base_->CreateDir(d));
  pending_.push_back({Pending::kCreateDir, d, "", std::nullopt, {Dirname(d)}});
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::CreateDirs(const std::string& dir) {
  const std::string d = Normalize(dir);
  absl::MutexLock lock(&mu_);
  DT_RETURN_IF_ERROR(BeginOp("mkdir -p", d));
  // The missing components, outermost first, so the rollback (newest first) removes inner ones
  // before outer ones.
  std::vector<std::string> missing;
  for (std::string p = d; !p.empty() && !base_->FileExists(p); p = Dirname(p)) {
    missing.insert(missing.begin(), p);
    if (Dirname(p) == p) break;
  }
  DT_RETURN_IF_ERROR(base_->CreateDirs(d));
  for (const std::string& p : missing) {
    pending_.push_back({Pending::kCreateDir, p, "", std::nullopt, {Dirname(p)}});
  }
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::RemoveFile(const std::string& path) {
  const std::string p = Normalize(path);
  absl::MutexLock lock(&mu_);
  DT_RETURN_IF_ERROR(BeginOp("unlink", p));
  DT_RETURN_IF_ERROR(base_->RemoveFile(p));
  files_.erase(p);
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::RemoveDirRecursively(const std::string& dir) {
  const std::string d = Normalize(dir);
  absl::MutexLock lock(&mu_);
  DT_RETURN_IF_ERROR(BeginOp("rm -r", d));
  DT_RETURN_IF_ERROR(base_->RemoveDirRecursively(d));
  for (auto it = files_.begin(); it != files_.end();) {
    it = IsUnder(it->first, d) ? files_.erase(it) : std::next(it);
  }
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::RenameFile(const std::string& from, const std::string& to) {
  const std::string f = Normalize(from);
  const std::string t = Normalize(to);
  absl::MutexLock lock(&mu_);
  DT_RETURN_IF_ERROR(BeginOp("rename", absl::StrCat(f, " -> ", t)));
  std::optional<std::string> replaced;
  if (base_->FileExists(t) && !base_->IsDirectory(t)) {
    // Checkpoint pointer files are tiny; a test that renames over a huge file gets an error.
    DT_ASSIGN_OR_RETURN(replaced, base_->ReadFileToString(t, 64 << 20));
  }
  DT_RETURN_IF_ERROR(base_->RenameFile(f, t));
  MoveFileStates(f, t);
  pending_.push_back({Pending::kRename, f, t, std::move(replaced), {Dirname(f), Dirname(t)}});
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::SyncDir(const std::string& dir) {
  const std::string d = Normalize(dir);
  absl::MutexLock lock(&mu_);
  DT_RETURN_IF_ERROR(BeginOp("fsync directory", d));
  DT_RETURN_IF_ERROR(base_->SyncDir(d));
  for (size_t i = 0; i < pending_.size();) {
    Pending& p = pending_[i];
    p.dirs.erase(d);
    if (!p.dirs.empty()) {
      ++i;
      continue;
    }
    if (p.kind == Pending::kRename) {
      // The rename is now permanent, so older pending entries that named paths under its source
      // must be undone under its destination.
      const std::string from = p.path;
      const std::string to = p.to;
      for (size_t j = 0; j < i; ++j) {
        Pending& older = pending_[j];
        older.path = Rebase(older.path, from, to);
        older.to = Rebase(older.to, from, to);
        std::set<std::string> dirs;
        for (const std::string& x : older.dirs) dirs.insert(Rebase(x, from, to));
        older.dirs = std::move(dirs);
      }
    }
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
  }
  return absl::OkStatus();
}

}  // namespace dstrain::env
