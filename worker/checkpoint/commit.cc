#include "worker/checkpoint/commit.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_macros.h"
#include "worker/checkpoint/crc32c.h"

namespace dstrain::checkpoint {
namespace {

constexpr int kFormat = 1;
// Manifests hold names, sizes and a small meta object; anything bigger is damage, not data.
constexpr uint64_t kMaxManifestBytes = 64 << 20;
constexpr uint64_t kMaxLatestBytes = 4096;
constexpr absl::string_view kTmpSuffix = ".tmp";
// Begin writes this file first into every <tag>.tmp it creates, synced before any shard goes in:
// a *.tmp directory that holds it (naming its tag) is a save of ours, which retention may remove;
// anything else under the root with a .tmp name belongs to someone else. Its name starts with '.',
// which no shard name can.
constexpr absl::string_view kSaveMarker = ".dstrain-save";
constexpr uint64_t kMaxMarkerBytes = 4096;

absl::Status ValidateName(absl::string_view name, absl::string_view what) {
  if (name.empty() || name[0] == '.' || absl::StrContains(name, '/') ||
      absl::EndsWith(name, kTmpSuffix)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid ", what, " \"", name,
                     "\": must be one path component, not start with '.', not end with \".tmp\""));
  }
  return absl::OkStatus();
}

std::string Hex(uint32_t v) { return absl::StrFormat("0x%08x", v); }

// Test-only (tests/fault/fault_test.sh kills the coordinator at exactly this step): with
// DSTRAIN_TEST_PAUSE_BEFORE_COMMIT=FILE set and FILE's directory present, the commit writes its
// tag into FILE just before the rename that commits it, then waits until FILE is gone. Unset, or
// with no such directory (how a test disarms it), it does nothing. Plain POSIX, not the Env: it
// is no part of the protocol, and the crash tests count the Env's operations.
void PauseBeforeCommitIfAsked(const std::string& tag) {
  const char* file = std::getenv("DSTRAIN_TEST_PAUSE_BEFORE_COMMIT");
  if (file == nullptr || *file == '\0') return;
  const std::string tmp = absl::StrCat(file, ".tmp");
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return;
  std::fputs(tag.c_str(), f);
  std::fclose(f);
  if (std::rename(tmp.c_str(), file) != 0) return;  // the marker appears with its tag in it
  while (access(file, F_OK) == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

std::string ManifestToJson(const CheckpointManifest& m) {
  const auto records = [](const std::vector<ShardRecord>& list) {
    nlohmann::json out = nlohmann::json::array();
    for (const ShardRecord& s : list) {
      out.push_back({{"name", s.name}, {"bytes", s.bytes}, {"crc32c", s.crc32c}});
    }
    return out;
  };
  nlohmann::json j = {{"format", kFormat},
                      {"tag", m.tag},
                      {"step", m.step},
                      {"shards", records(m.shards)},
                      {"meta", m.meta}};
  // Only when there are any: a manifest without other files reads as it always did.
  if (!m.files.empty()) j["files"] = records(m.files);
  // Replace invalid UTF-8 in caller strings rather than throw: the manifest must always be
  // writable.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

absl::StatusOr<CheckpointManifest> ParseManifest(const std::string& text, const std::string& path) {
  const auto bad = [&path](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(path, ": invalid checkpoint manifest: ", why));
  };
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object (torn or corrupt)");
  if (!j.contains("format") || !j["format"].is_number_integer() || j["format"] != kFormat) {
    return bad(absl::StrCat("\"format\" is not ", kFormat));
  }
  if (!j.contains("tag") || !j["tag"].is_string()) return bad("\"tag\" missing");
  if (!j.contains("step") || !j["step"].is_number_integer()) return bad("\"step\" missing");
  if (!j.contains("shards") || !j["shards"].is_array()) return bad("\"shards\" missing");
  if (!j.contains("meta") || !j["meta"].is_object()) return bad("\"meta\" missing");
  CheckpointManifest m;
  m.tag = j["tag"].get<std::string>();
  m.step = j["step"].get<int64_t>();
  m.meta = j["meta"];
  if (j.contains("files") && !j["files"].is_array()) return bad("\"files\" is not an array");
  std::set<std::string> names;
  for (const char* list : {"shards", "files"}) {
    if (!j.contains(list)) continue;
    for (const nlohmann::json& s : j[list]) {
      if (!s.is_object() || !s.contains("name") || !s["name"].is_string() || !s.contains("bytes") ||
          !s["bytes"].is_number_unsigned() || !s.contains("crc32c") ||
          !s["crc32c"].is_number_unsigned() || s["crc32c"].get<uint64_t>() > 0xFFFFFFFFu) {
        return bad(absl::StrCat("a ", list, " entry lacks name, bytes or crc32c"));
      }
      ShardRecord r{s["name"].get<std::string>(), s["bytes"].get<uint64_t>(),
                    static_cast<uint32_t>(s["crc32c"].get<uint64_t>())};
      if (!ValidateName(r.name, "shard name").ok() || r.name == kManifestName ||
          !names.insert(r.name).second) {
        return bad(absl::StrCat("bad or repeated file name \"", r.name, "\""));
      }
      (std::string(list) == "shards" ? m.shards : m.files).push_back(std::move(r));
    }
  }
  return m;
}

// The manifest of `root`/`tag` when that tag is committed (see commit.h).
absl::StatusOr<CheckpointManifest> LoadCommitted(env::Env* env, const std::string& root,
                                                 const std::string& tag) {
  DT_RETURN_IF_ERROR(ValidateName(tag, "checkpoint tag"));
  const std::string dir = env::JoinPath(root, tag);
  const std::string path = env::JoinPath(dir, kManifestName);
  if (!env->FileExists(path)) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", tag, " is not committed: no ", path));
  }
  DT_ASSIGN_OR_RETURN(std::string text, env->ReadFileToString(path, kMaxManifestBytes));
  DT_ASSIGN_OR_RETURN(CheckpointManifest m, ParseManifest(text, path));
  if (m.tag != tag) {
    return absl::DataLossError(
        absl::StrCat(path, ": manifest is for tag \"", m.tag, "\", not \"", tag, "\""));
  }
  std::vector<ShardRecord> listed = m.shards;
  listed.insert(listed.end(), m.files.begin(), m.files.end());
  for (const ShardRecord& s : listed) {
    const std::string shard = env::JoinPath(dir, s.name);
    absl::StatusOr<uint64_t> size = env->GetFileSize(shard);
    if (!size.ok()) {
      return absl::DataLossError(
          absl::StrCat("checkpoint ", tag, ": shard missing: ", size.status().message()));
    }
    if (*size != s.bytes) {
      return absl::DataLossError(absl::StrCat(shard, ": ", *size, " bytes, manifest says ", s.bytes,
                                              " (torn or truncated write)"));
    }
  }
  return m;
}

std::string MarkerText(absl::string_view tag, int64_t step) {
  return nlohmann::json{{"tag", tag}, {"step", step}}.dump() + "\n";
}

// Whether `dir` (named <tag>.tmp under the root) is a save this writer began: it holds the marker
// naming that tag.
bool IsOurSave(env::Env* env, const std::string& dir, absl::string_view tag) {
  absl::StatusOr<std::string> text =
      env->ReadFileToString(env::JoinPath(dir, kSaveMarker), kMaxMarkerBytes);
  if (!text.ok()) return false;
  const nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.contains("tag") && j["tag"].is_string() &&
         j["tag"].get<std::string>() == tag;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointWriter>> CheckpointWriter::Begin(env::Env* env,
                                                                          std::string root,
                                                                          std::string tag,
                                                                          int64_t step) {
  DT_RETURN_IF_ERROR(ValidateName(tag, "checkpoint tag"));
  if (tag == kLatestTag) {
    return absl::InvalidArgumentError("checkpoint tag \"latest\" is reserved for the pointer");
  }
  if (!env->IsDirectory(root)) {
    // Every directory created here must be synced into its parent, or a crash could take the
    // whole root, committed checkpoints included, with it.
    std::vector<std::string> missing;
    for (std::string p = root; !env->FileExists(p) && env::Dirname(p) != p; p = env::Dirname(p)) {
      missing.push_back(p);
    }
    DT_RETURN_IF_ERROR(env->CreateDirs(root));
    for (const std::string& p : missing) DT_RETURN_IF_ERROR(env->SyncDir(env::Dirname(p)));
  }
  const std::string final_dir = env::JoinPath(root, tag);
  if (env->FileExists(final_dir)) {
    return absl::AlreadyExistsError(absl::StrCat(final_dir, ": checkpoint tag already exists"));
  }
  std::string tmp_dir = absl::StrCat(final_dir, kTmpSuffix);
  if (env->FileExists(tmp_dir)) {
    // A leftover of an interrupted save of this tag carries the marker; an empty directory is one
    // that a crash caught before the marker was durable. Anything else is not ours to delete.
    bool empty = false;
    if (env->IsDirectory(tmp_dir)) {
      const absl::StatusOr<std::vector<std::string>> children = env->GetChildren(tmp_dir);
      empty = children.ok() && children->empty();
    }
    if (!empty && !IsOurSave(env, tmp_dir, tag)) {
      return absl::FailedPreconditionError(
          absl::StrCat(tmp_dir, ": exists and is not a checkpoint save of tag \"", tag, "\" (no ",
                       kSaveMarker, " naming it); move it away to save this tag"));
    }
    DT_RETURN_IF_ERROR(env->RemoveDirRecursively(tmp_dir));
  }
  DT_RETURN_IF_ERROR(env->CreateDir(tmp_dir));
  // The marker is durable before any shard is written, so whatever a crash leaves in a *.tmp
  // directory of ours can be recognised as ours and removed.
  DT_RETURN_IF_ERROR(env->WriteStringToFile(env::JoinPath(tmp_dir, kSaveMarker),
                                            MarkerText(tag, step), /*sync=*/true));
  DT_RETURN_IF_ERROR(env->SyncDir(tmp_dir));
  CheckpointManifest manifest;
  manifest.tag = std::move(tag);
  manifest.step = step;
  return std::unique_ptr<CheckpointWriter>(
      new CheckpointWriter(env, std::move(root), std::move(tmp_dir), std::move(manifest)));
}

absl::Status CheckpointWriter::WriteShard(absl::string_view name, absl::string_view data) {
  if (done_) return absl::FailedPreconditionError(absl::StrCat(tmp_dir_, ": save already ended"));
  DT_RETURN_IF_ERROR(ValidateName(name, "shard name"));
  if (name == kManifestName) {
    return absl::InvalidArgumentError(absl::StrCat("shard name \"", name, "\" is reserved"));
  }
  for (const ShardRecord& s : manifest_.shards) {
    if (s.name == name) {
      return absl::AlreadyExistsError(absl::StrCat(tmp_dir_, ": shard ", name, " written twice"));
    }
  }
  DT_ASSIGN_OR_RETURN(ShardRecord record, WriteShardFile(env_, tmp_dir_, name, data));
  manifest_.shards.push_back(std::move(record));
  return absl::OkStatus();
}

absl::Status CheckpointWriter::AddShard(ShardRecord record) {
  return Add(std::move(record), &manifest_.shards);
}

absl::Status CheckpointWriter::AddFile(ShardRecord record) {
  return Add(std::move(record), &manifest_.files);
}

absl::Status CheckpointWriter::Add(ShardRecord record, std::vector<ShardRecord>* list) {
  if (done_) return absl::FailedPreconditionError(absl::StrCat(tmp_dir_, ": save already ended"));
  DT_RETURN_IF_ERROR(ValidateName(record.name, "shard name"));
  for (const std::vector<ShardRecord>* recorded : {&manifest_.shards, &manifest_.files}) {
    for (const ShardRecord& s : *recorded) {
      if (s.name == record.name) {
        return absl::AlreadyExistsError(
            absl::StrCat(tmp_dir_, ": shard ", record.name, " recorded twice"));
      }
    }
  }
  DT_ASSIGN_OR_RETURN(const uint64_t size, env_->GetFileSize(env::JoinPath(tmp_dir_, record.name)));
  if (size != record.bytes) {
    return absl::DataLossError(absl::StrCat(env::JoinPath(tmp_dir_, record.name), ": has ", size,
                                            " bytes, its writer reported ", record.bytes));
  }
  list->push_back(std::move(record));
  return absl::OkStatus();
}

std::string CheckpointTmpDir(const std::string& root, absl::string_view tag) {
  return env::JoinPath(root, absl::StrCat(tag, kTmpSuffix));
}

absl::StatusOr<ShardRecord> WriteShardFile(env::Env* env, const std::string& dir,
                                           absl::string_view name, absl::string_view data) {
  return WriteShardFile(env, dir, name, std::vector<absl::string_view>{data});
}

absl::StatusOr<ShardRecord> WriteShardFile(env::Env* env, const std::string& dir,
                                           absl::string_view name,
                                           const std::vector<absl::string_view>& pieces) {
  return WriteShardFile(env, dir, name, env::PiecesSource(pieces));
}

absl::StatusOr<ShardRecord> WriteShardFile(env::Env* env, const std::string& dir,
                                           absl::string_view name, const env::ChunkSource& chunks) {
  DT_RETURN_IF_ERROR(ValidateName(name, "shard name"));
  if (name == kManifestName) {
    return absl::InvalidArgumentError(absl::StrCat("shard name \"", name, "\" is reserved"));
  }
  DT_ASSIGN_OR_RETURN(std::unique_ptr<env::WritableFile> file,
                      env->NewWritableFile(env::JoinPath(dir, name)));
  ShardRecord record{std::string(name), 0, 0};
  // The checksum of a large chunk runs on another core while this one writes it.
  constexpr uint64_t kParallelCrcBytes = uint64_t{32} << 20;
  while (true) {
    DT_ASSIGN_OR_RETURN(const absl::string_view chunk, chunks());
    if (chunk.empty()) break;
    record.bytes += chunk.size();
    auto checksum = [&record, chunk] { record.crc32c = crc32c::Extend(record.crc32c, chunk); };
    std::thread crc_thread;
    if (chunk.size() >= kParallelCrcBytes) {
      crc_thread = std::thread(checksum);
    } else {
      checksum();
    }
    const absl::Status written = file->Append(chunk);
    if (crc_thread.joinable()) crc_thread.join();
    DT_RETURN_IF_ERROR(written);
  }
  DT_RETURN_IF_ERROR(file->Sync());
  DT_RETURN_IF_ERROR(file->Close());
  return record;
}

absl::Status CheckpointWriter::Commit(const nlohmann::json& meta) {
  if (done_) return absl::FailedPreconditionError(absl::StrCat(tmp_dir_, ": save already ended"));
  // Whatever happens below, this writer is finished: a half-done commit cannot be resumed safely.
  done_ = true;
  if (!meta.is_object()) return absl::InvalidArgumentError("checkpoint meta must be a JSON object");
  manifest_.meta = meta;
  DT_RETURN_IF_ERROR(env_->WriteStringToFile(env::JoinPath(tmp_dir_, kManifestName),
                                             ManifestToJson(manifest_), /*sync=*/true));
  // Persist the shard and manifest entries before the rename publishes the directory.
  DT_RETURN_IF_ERROR(env_->SyncDir(tmp_dir_));
  PauseBeforeCommitIfAsked(manifest_.tag);
  DT_RETURN_IF_ERROR(env_->RenameFile(tmp_dir_, env::JoinPath(root_, manifest_.tag)));
  DT_RETURN_IF_ERROR(env_->SyncDir(root_));  // committed from here on
  // The pointer: latest.tmp, synced, renamed over latest, root synced (KeepLast removes a
  // latest.tmp that a crash left, with the other *.tmp entries).
  return env::WriteFileAtomically(env_, env::JoinPath(root_, kLatestTag), manifest_.tag);
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::Open(env::Env* env,
                                                                         const std::string& root,
                                                                         absl::string_view tag) {
  std::string name(tag);
  absl::StatusOr<CheckpointManifest> manifest;
  if (tag == kLatestTag) {
    // The committed tag with the highest step, whatever the `latest` file says: a crash between
    // a commit (the rename) and the pointer's update leaves the pointer one checkpoint behind,
    // and resuming from there would train the newer step again and then find its tag taken.
    DT_ASSIGN_OR_RETURN(std::vector<CheckpointManifest> all, ListCommitted(env, root));
    if (all.empty()) {
      return absl::NotFoundError(absl::StrCat("no committed checkpoint under ", root));
    }
    manifest = std::move(all.back());
    name = manifest->tag;
  } else {
    manifest = LoadCommitted(env, root, name);
  }
  if (!manifest.ok()) return manifest.status();
  return std::unique_ptr<CheckpointReader>(
      new CheckpointReader(env, env::JoinPath(root, name), *std::move(manifest)));
}

absl::StatusOr<std::unique_ptr<ShardReader>> CheckpointReader::OpenShard(
    absl::string_view name) const {
  return Open(name, /*verified=*/true);
}

absl::StatusOr<std::unique_ptr<ShardReader>> CheckpointReader::OpenShardRanges(
    absl::string_view name) const {
  return Open(name, /*verified=*/false);
}

absl::StatusOr<std::unique_ptr<ShardReader>> CheckpointReader::Open(absl::string_view name,
                                                                    bool verified) const {
  const ShardRecord* it = nullptr;
  for (const std::vector<ShardRecord>* list : {&manifest_.shards, &manifest_.files}) {
    for (const ShardRecord& s : *list) {
      if (it == nullptr && s.name == name) it = &s;
    }
  }
  if (it == nullptr) {
    return absl::NotFoundError(absl::StrCat(dir_, ": checkpoint has no shard \"", name, "\""));
  }
  std::string path = env::JoinPath(dir_, it->name);
  DT_ASSIGN_OR_RETURN(uint64_t size, env_->GetFileSize(path));
  if (size != it->bytes) {
    return absl::DataLossError(absl::StrCat(path, ": ", size, " bytes, manifest says ", it->bytes));
  }
  DT_ASSIGN_OR_RETURN(std::unique_ptr<env::SequentialFile> file, env_->NewSequentialFile(path));
  return std::make_unique<ShardReader>(std::move(path), *it, std::move(file), verified);
}

absl::Status ShardReader::Read(void* dst, size_t n) {
  if (n > remaining()) {
    return absl::DataLossError(absl::StrCat(path_, ": ", n, " bytes wanted at offset ", read_,
                                            ", the shard has ", remaining(), " left"));
  }
  // Chunks small enough that the checksum reads them while they are still in cache.
  constexpr size_t kChunk = size_t{4} << 20;
  char* out = static_cast<char*>(dst);
  while (n > 0) {
    DT_ASSIGN_OR_RETURN(const size_t got, file_->Read(std::min(n, kChunk), out));
    if (got == 0) {
      return absl::DataLossError(
          absl::StrCat(path_, ": ends at ", read_, " bytes, manifest says ", record_.bytes));
    }
    crc_ = crc32c::Extend(crc_, absl::string_view(out, got));
    read_ += got;
    out += got;
    n -= got;
  }
  return absl::OkStatus();
}

absl::Status ShardReader::Skip(uint64_t n) {
  if (n > remaining()) {
    return absl::DataLossError(absl::StrCat(path_, ": skipping ", n, " bytes at offset ", read_,
                                            ", the shard has ", remaining(), " left"));
  }
  if (!verified_) {
    DT_RETURN_IF_ERROR(file_->Skip(n));
    read_ += n;
    return absl::OkStatus();
  }
  // Through the checksum, in pieces of at most 1 MiB: the memory a streaming pass holds.
  std::vector<char> scratch(std::min<uint64_t>(n, uint64_t{1} << 20));
  while (n > 0) {
    const size_t step = std::min<uint64_t>(n, scratch.size());
    DT_RETURN_IF_ERROR(Read(scratch.data(), step));
    n -= step;
  }
  return absl::OkStatus();
}

absl::Status ShardReader::Finish() {
  if (!verified_) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": read in ranges, its checksum is checked by a full pass only"));
  }
  DT_RETURN_IF_ERROR(Skip(remaining()));
  if (crc_ != record_.crc32c) {
    return absl::DataLossError(absl::StrCat(path_, ": crc32c mismatch: file has ", Hex(crc_),
                                            ", manifest says ", Hex(record_.crc32c)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> CheckpointReader::ReadShard(absl::string_view name) const {
  DT_ASSIGN_OR_RETURN(std::unique_ptr<ShardReader> shard, OpenShard(name));
  std::string data(shard->remaining(), '\0');
  DT_RETURN_IF_ERROR(shard->Read(data.data(), data.size()));
  DT_RETURN_IF_ERROR(shard->Finish());
  return data;
}

absl::Status CheckpointReader::VerifyAll() const {
  for (const ShardRecord& s : manifest_.shards) DT_RETURN_IF_ERROR(ReadShard(s.name).status());
  for (const ShardRecord& s : manifest_.files) DT_RETURN_IF_ERROR(ReadShard(s.name).status());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<CheckpointManifest>> ListCommitted(env::Env* env,
                                                              const std::string& root) {
  std::vector<CheckpointManifest> out;
  if (!env->IsDirectory(root)) return out;
  DT_ASSIGN_OR_RETURN(std::vector<std::string> children, env->GetChildren(root));
  for (const std::string& name : children) {
    if (name == kLatestTag || !ValidateName(name, "").ok()) continue;
    if (!env->IsDirectory(env::JoinPath(root, name))) continue;
    absl::StatusOr<CheckpointManifest> m = LoadCommitted(env, root, name);
    if (m.ok()) out.push_back(*std::move(m));  // not committed: not ours to list
  }
  std::sort(out.begin(), out.end(), [](const CheckpointManifest& a, const CheckpointManifest& b) {
    return a.step != b.step ? a.step < b.step : a.tag < b.tag;
  });
  return out;
}

absl::Status KeepLast(env::Env* env, const std::string& root, int n) {
  if (n < 1) return absl::InvalidArgumentError(absl::StrCat("KeepLast needs n >= 1, got ", n));
  DT_ASSIGN_OR_RETURN(std::vector<CheckpointManifest> committed, ListCommitted(env, root));
  std::set<std::string> keep;
  for (size_t i = committed.size() > static_cast<size_t>(n) ? committed.size() - n : 0;
       i < committed.size(); ++i) {
    keep.insert(committed[i].tag);
  }
  absl::StatusOr<std::string> latest =
      env->ReadFileToString(env::JoinPath(root, kLatestTag), kMaxLatestBytes);
  if (latest.ok()) keep.insert(std::string(absl::StripAsciiWhitespace(*latest)));

  bool removed = false;
  for (const CheckpointManifest& m : committed) {
    if (keep.count(m.tag) > 0) continue;
    DT_RETURN_IF_ERROR(env->RemoveDirRecursively(env::JoinPath(root, m.tag)));
    removed = true;
  }
  if (env->IsDirectory(root)) {
    DT_ASSIGN_OR_RETURN(std::vector<std::string> children, env->GetChildren(root));
    for (const std::string& name : children) {
      if (!absl::EndsWith(name, kTmpSuffix)) continue;
      const std::string path = env::JoinPath(root, name);
      const absl::string_view tag =
          absl::string_view(name).substr(0, name.size() - kTmpSuffix.size());
      if (tag == kLatestTag && !env->IsDirectory(path)) {
        // The pointer's temporary file (env::WriteFileAtomically), left by a crash.
        DT_RETURN_IF_ERROR(env->RemoveFile(path));
        removed = true;
      } else if (ValidateName(tag, "").ok() && env->IsDirectory(path) &&
                 IsOurSave(env, path, tag)) {
        DT_RETURN_IF_ERROR(env->RemoveDirRecursively(path));
        removed = true;
      }
    }
  }
  if (removed) DT_RETURN_IF_ERROR(env->SyncDir(root));
  return absl::OkStatus();
}

}  // namespace dstrain::checkpoint
