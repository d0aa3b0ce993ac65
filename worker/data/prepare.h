// `dstrain prepare`: turns a text file into byte-level token shards for training and validation.
//
// The text is split by position, not sampled: the first (1 - val_fraction) of its bytes are the
// training split and the LAST val_fraction the validation split, exactly as nanoGPT's
// data/shakespeare_char/prepare.py does (train = data[:int(n*0.9)], val = data[int(n*0.9):]). A
// contiguous tail keeps validation text unseen during training (no sentence straddles both
// splits except at the one cut). Note llm.c's dev/data/tinyshakespeare.py differs: it holds out
// the FIRST 32,768 GPT-2 tokens; ours is the byte-level nanoGPT convention.
//
// Each split is written as consecutive shards of at most shard_tokens tokens:
// out_dir/train_000000.bin, train_000001.bin, ... and out_dir/val_000000.bin, ... (llm.c format,
// see token_shard.h), each written atomically. The text is streamed, so memory is O(shard_tokens)
// whatever the text's size. Shards never straddle the split.
//
// Re-running into the same directory overwrites the same names. It refuses (FailedPrecondition,
// before writing anything) when out_dir holds train_*.bin / val_*.bin shards this run would not
// overwrite, e.g. from an earlier run on a longer text: a training glob would pick them up.
//
// Thread-safety: PrepareText may run concurrently for different out_dirs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dstrain::data {

struct PrepareOptions {
  // Fraction of the text, taken from its end, held out for validation; in [0, 1). With 0 no val
  // shard is written.
  double val_fraction = 0.1;
  // Tokens per shard, in [1, INT32_MAX]. 16 Mi tokens = 32 MiB files: small enough to write and
  // map comfortably, large enough that a GPT-2-size corpus is a few hundred files.
  int64_t shard_tokens = int64_t{1} << 24;
};

struct PrepareSummary {
  uint64_t text_bytes = 0;  // = train_tokens + val_tokens (one token per byte)
  uint64_t train_tokens = 0;
  uint64_t val_tokens = 0;
  std::vector<std::string> train_files;  // in order; concatenated they are the training split
  std::vector<std::string> val_files;
};

// Tokenizes `text_path` bytewise into shards under `out_dir` (created if missing). Errors name the
// file: NotFound for a missing text, InvalidArgument for bad options or a text too short to give
// both splits at least one token.
absl::StatusOr<PrepareSummary> PrepareText(const std::string& text_path, const std::string& out_dir,
                                           const PrepareOptions& options = {});

}  // namespace dstrain::data
