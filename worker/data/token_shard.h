// llm.c token shards: reading (memory-mapped), atomic writing, and glob expansion.
//
// A shard is a header of 256 little-endian int32 — [0] = 20240520 (magic), [1] = 1 (version),
// [2] = ntok — followed by ntok little-endian uint16 tokens; the file is exactly 1024 + 2 * ntok
// bytes (karpathy/llm.c dev/data/data_common.py). Llama-3 shards (magic 20240801, uint32 tokens)
// are rejected, as llm.c's C loader does.
//
// TokenShard maps the file read-only and serves the tokens in place, with no copy: a training
// corpus can be far larger than memory and the page cache does the buffering. The file must not be
// truncated while mapped (the kernel would raise SIGBUS on access); WriteTokenShard never does that
// to an existing shard because it replaces files by rename.
//
// Errors: a missing file is NotFound; a file that is not a version-1 shard is InvalidArgument; a
// file shorter or longer than its header says is DataLoss. Every message names the path.
//
// Thread-safety: a TokenShard is immutable after Open; concurrent reads of tokens() are safe.
// The free functions are safe to call concurrently on different paths.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace dstrain::data {

inline constexpr int32_t kTokenShardMagic = 20240520;
inline constexpr int32_t kTokenShardVersion = 1;
inline constexpr size_t kTokenShardHeaderInts = 256;
inline constexpr size_t kTokenShardHeaderBytes = kTokenShardHeaderInts * sizeof(int32_t);

// How a shard will be read, passed on to madvise(2) as a hint (failures to advise are ignored:
// advice changes speed, never results).
enum class AccessHint {
  // One pass front to back (e.g. counting, copying): MADV_SEQUENTIAL, so the kernel reads ahead
  // aggressively and may drop pages behind the reader.
  kSequential,
  // Reads in an order unrelated to file order that still touch every page (a shuffled training
  // epoch): MADV_WILLNEED, which starts reading the whole file into the page cache now, instead of
  // one page fault per window later. Right while the corpus fits in the page cache, which is the
  // case this project targets; for a corpus far larger than memory prefer kSequential.
  kRandom,
};

// A read-only, memory-mapped token shard. Move-only; unmaps on destruction.
class TokenShard {
 public:
  // Maps and validates the shard at `path`.
  static absl::StatusOr<TokenShard> Open(const std::string& path,
                                         AccessHint hint = AccessHint::kSequential);

  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;
  ~TokenShard();

  const std::string& path() const { return path_; }
  size_t size() const { return num_tokens_; }
  // The tokens, valid for the lifetime of this object (they point into the mapping).
  absl::Span<const uint16_t> tokens() const { return absl::MakeConstSpan(tokens_, num_tokens_); }

 private:
  TokenShard(std::string path, void* map, size_t map_bytes, const uint16_t* tokens,
             size_t num_tokens)
      : path_(std::move(path)),
        map_(map),
        map_bytes_(map_bytes),
        tokens_(tokens),
        num_tokens_(num_tokens) {}
  void Unmap();

  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint16_t* tokens_ = nullptr;
  size_t num_tokens_ = 0;
};

// Writes `tokens` as a shard at `path`, atomically: the bytes go to a temporary file in the same
// directory, which is fsynced and renamed over `path`, and the directory is fsynced. A reader (or
// a crash) therefore sees either the old file or the complete new one, never a torn shard.
// InvalidArgument when there are more than INT32_MAX tokens (the header's ntok is an int32).
absl::Status WriteTokenShard(const std::string& path, absl::Span<const uint16_t> tokens);

// Expands a glob(3) pattern (e.g. "data/shakespeare/train_*.bin") into the matching paths, sorted
// bytewise (not by locale, so every rank and machine agrees on the order). A pattern with no
// wildcard names a single file, which must exist. NotFound, naming the pattern, when nothing
// matches.
absl::StatusOr<std::vector<std::string>> ExpandShardPattern(const std::string& pattern);

}  // namespace dstrain::data
