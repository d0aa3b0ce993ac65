// The checkpoint commit protocol (docs/checkpoints.md) for one checkpoint root directory, and the
// reader that loads only what was committed.
//
// Layout under `root`:
//   <tag>/manifest.json  {"format":1,"tag":..,"step":..,"shards":[{"name","bytes","crc32c"}],
//                         "files":[..same..] (optional), "meta":{..caller's..}}
//   <tag>/<shard>...     the shard files, byte for byte as the caller gave them
//   <tag>/.dstrain-save  the marker Begin writes first: {"tag":..,"step":..}
//   latest               the name of the newest committed tag
// A save writes into <tag>.tmp/: each shard is written, synced and closed, then the manifest is
// written and synced, <tag>.tmp is synced (so its entries survive a crash), renamed to <tag>, and
// root is synced: from that moment the tag is committed. Last, `latest` is replaced atomically
// (latest.tmp, sync, rename, sync root). A crash at any point therefore leaves either the new
// checkpoint or the previous one loadable, never a mix.
// "Committed" as the reader checks it: <tag> (not *.tmp) holds a manifest that parses, names its
// own tag, and lists shards (and files) that all exist with the listed sizes. Checksums are
// verified when a shard is read (ReadShard) or on demand (VerifyAll), since that costs a full read.
// Not thread-safe: one writer per tag, and no KeepLast while a save is in progress.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/env/byte_source.h"
#include "worker/env/env.h"

namespace dstrain::checkpoint {

struct ShardRecord {
  std::string name;
  uint64_t bytes = 0;
  uint32_t crc32c = 0;
};

struct CheckpointManifest {
  std::string tag;
  int64_t step = 0;
  std::vector<ShardRecord> shards;
  // Other files the save put into the checkpoint (e.g. the consolidated model.bin): not any
  // rank's shard, but committed, checked and checksummed like one. "files" in the manifest,
  // written only when there are any.
  std::vector<ShardRecord> files;
  nlohmann::json meta = nlohmann::json::object();
};

inline constexpr absl::string_view kLatestTag = "latest";
inline constexpr absl::string_view kManifestName = "manifest.json";

class CheckpointWriter {
 public:
  // Starts saving `tag` at `step` under `root` (created if missing): creates <tag>.tmp and first
  // writes and syncs into it a marker file (.dstrain-save, naming the tag and step) by which
  // retention recognises the directory as a save of ours. A leftover <tag>.tmp of an interrupted
  // save (marked, or empty) is removed; any other <tag>.tmp is kFailedPrecondition, left as it
  // is; an already committed <tag> is kAlreadyExists. Tags and shard
  // names are single path components: not empty, no '/', no leading '.', no ".tmp" suffix, and
  // the tag is not "latest". `env` must outlive the writer.
  static absl::StatusOr<std::unique_ptr<CheckpointWriter>> Begin(env::Env* env, std::string root,
                                                                 std::string tag, int64_t step);

  // Writes, syncs and closes one shard, recording its size and CRC-32C.
  absl::Status WriteShard(absl::string_view name, absl::string_view data);
  // Records a shard another process wrote into tmp_dir() with WriteShardFile (multi-rank saves:
  // every rank writes its own shard, rank 0 collects the records and commits).
  absl::Status AddShard(ShardRecord record);
  // Records another file written into tmp_dir() with WriteShardFile that is no rank's shard (the
  // manifest's "files").
  absl::Status AddFile(ShardRecord record);
  // Where the shards of this save go until the commit.
  const std::string& tmp_dir() const { return tmp_dir_; }
  // Writes the manifest with `meta` (must be a JSON object) and commits; see the header comment.
  // After an error the checkpoint is not committed and the writer must not be used again.
  absl::Status Commit(const nlohmann::json& meta);

  const CheckpointManifest& manifest() const { return manifest_; }

 private:
  CheckpointWriter(env::Env* env, std::string root, std::string tmp_dir,
                   CheckpointManifest manifest)
      : env_(env),
        root_(std::move(root)),
        tmp_dir_(std::move(tmp_dir)),
        manifest_(std::move(manifest)) {}

  absl::Status Add(ShardRecord record, std::vector<ShardRecord>* list);

  env::Env* const env_;
  const std::string root_;
  const std::string tmp_dir_;
  CheckpointManifest manifest_;
  bool done_ = false;
};

// One shard of a committed checkpoint, read in order straight into the caller's memory (no
// intermediate copy of hundreds of MB). Two ways to read it:
//   - verified (OpenShard): the CRC-32C runs alongside the reads, and Skip reads the bytes it
//     passes (in bounded pieces) so they count too; Finish checks that the whole shard was read
//     and matches the manifest. Bytes read before Finish are unverified: callers restore into
//     state they throw away when Finish (or any Read) fails.
//   - ranged (OpenShardRanges): Skip seeks, so only the ranges read touch the disk, and nothing
//     is checksummed: Finish is kFailedPrecondition. For loaders that have every byte of the
//     shard verified by another verified pass, whose outcome they wait for before using the data
//     (resharding: one rank streams each shard, every rank agrees on the result).
class ShardReader final : public env::ByteSource {
 public:
  ShardReader(std::string path, ShardRecord record, std::unique_ptr<env::SequentialFile> file,
              bool verified = true)
      : path_(std::move(path)),
        record_(std::move(record)),
        file_(std::move(file)),
        verified_(verified) {}

  absl::Status Read(void* dst, size_t n) override;
  uint64_t remaining() const override { return record_.bytes - read_; }
  // Moves past `n` bytes: reads them through the checksum (verified), or seeks (ranged).
  absl::Status Skip(uint64_t n) override;
  // Reads what is left (discarding it) and checks the checksum: kDataLoss naming the file when it
  // differs. After a failed restore, this tells a damaged file from a mismatched one. A ranged
  // reader has nothing to check: kFailedPrecondition.
  absl::Status Finish();
  // Bytes read or skipped so far (the position in the file).
  uint64_t offset() const { return read_; }

  const std::string& path() const { return path_; }

 private:
  const std::string path_;
  const ShardRecord record_;
  std::unique_ptr<env::SequentialFile> file_;
  const bool verified_;
  uint64_t read_ = 0;
  uint32_t crc_ = 0;
};

class CheckpointReader {
 public:
  // Opens committed checkpoint `tag` under `root`. For "latest": the committed tag with the
  // highest step (the `latest` file is written for people and tools, but a crash right after a
  // commit can leave it one behind); kNotFound when nothing is committed. A tag that is not
  // committed gives kNotFound (missing) or kDataLoss (damaged), naming the file at fault.
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> Open(env::Env* env,
                                                                const std::string& root,
                                                                absl::string_view tag);

  const CheckpointManifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }

  // Reads a shard (or one of the manifest's other files) and checks its size and CRC-32C;
  // kDataLoss naming the file on a mismatch, kNotFound for a name the manifest does not list.
  absl::StatusOr<std::string> ReadShard(absl::string_view name) const;
  // Opens a shard for reading in place; its size is checked here, its checksum by Finish().
  absl::StatusOr<std::unique_ptr<ShardReader>> OpenShard(absl::string_view name) const;
  // Opens a shard for reading some of its ranges (a ranged ShardReader: its size is checked here,
  // its checksum nowhere, see ShardReader).
  absl::StatusOr<std::unique_ptr<ShardReader>> OpenShardRanges(absl::string_view name) const;
  // Reads every shard once to check its checksum.
  absl::Status VerifyAll() const;

 private:
  CheckpointReader(env::Env* env, std::string dir, CheckpointManifest manifest)
      : env_(env), dir_(std::move(dir)), manifest_(std::move(manifest)) {}
  absl::StatusOr<std::unique_ptr<ShardReader>> Open(absl::string_view name, bool verified) const;

  env::Env* const env_;
  const std::string dir_;
  const CheckpointManifest manifest_;
};

// The directory a save of `tag` under `root` writes into (CheckpointWriter::tmp_dir()).
std::string CheckpointTmpDir(const std::string& root, absl::string_view tag);
// Writes, syncs and closes one shard file in `dir` (a save's tmp dir), returning its record.
absl::StatusOr<ShardRecord> WriteShardFile(env::Env* env, const std::string& dir,
                                           absl::string_view name, absl::string_view data);
// The same for a shard given in pieces, written one after the other (no concatenated copy).
absl::StatusOr<ShardRecord> WriteShardFile(env::Env* env, const std::string& dir,
                                           absl::string_view name,
                                           const std::vector<absl::string_view>& pieces);
// The same for a shard produced chunk by chunk (never all in memory); an error from `chunks`
// fails the write.
absl::StatusOr<ShardRecord> WriteShardFile(env::Env* env, const std::string& dir,
                                           absl::string_view name, const env::ChunkSource& chunks);

// The committed tags under `root`, oldest first (by step, then by name); empty when `root` does
// not exist.
absl::StatusOr<std::vector<CheckpointManifest>> ListCommitted(env::Env* env,
                                                              const std::string& root);

// Retention: keeps the `n` (>= 1) newest committed tags and the one `latest` names; removes older
// committed tags, the <tag>.tmp directories of interrupted saves (those holding the marker file
// Begin writes first, naming that tag) and a `latest.tmp` file the pointer's update left. Every
// other entry, *.tmp names included (a user's notes.tmp or data.tmp/), is left alone: it is not
// ours to judge.
absl::Status KeepLast(env::Env* env, const std::string& root, int n);

}  // namespace dstrain::checkpoint
