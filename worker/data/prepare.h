// `dstrain prepare`: turns a text file into token shards for training and validation, with the
// byte-level tokenizer (the default; one token per byte, vocabulary 256) or a BPE tokenizer from
// the user's files (bpe_tokenizer.h, docs/tokenization.md).
//
// The text is split by position, not sampled: the first (1 - val_fraction) of its bytes are the
// training split and the LAST val_fraction the validation split, exactly as nanoGPT's
// data/shakespeare_char/prepare.py does (train = data[:int(n*0.9)], val = data[int(n*0.9):]). A
// contiguous tail keeps validation text unseen during training (no sentence straddles both
// splits except at the one cut). Note llm.c's dev/data/tinyshakespeare.py differs: it holds out
// the FIRST 32,768 GPT-2 tokens; ours is the byte-level nanoGPT convention. With BPE the cut is at
// the same byte, moved forward to the start of a UTF-8 character if it fell inside one, and each
// split is encoded as a text of its own.
//
// Each split is written as consecutive shards of at most shard_tokens tokens:
// out_dir/train_000000.bin, train_000001.bin, ... and out_dir/val_000000.bin, ... (llm.c format,
// see token_shard.h), each written atomically. The text is streamed, so memory is O(shard_tokens)
// whatever the text's size. Shards never straddle the split. With BPE the text is read in chunks
// cut where encoding apart gives the same ids as encoding whole (BpeTokenizer::SafeSplit: after a
// word, before a space, or after a line break; a stretch with no such point is held whole, up to
// max_unsplit_bytes), and the ids go to an unlinked
// temporary file in out_dir until their count, and so the shard names, are known.
//
// out_dir/tokenizer.txt records which tokenizer made the shards: its kind, vocab_size (a model
// trained on them needs model.vocab_size >= it) and, for BPE, the format and the SHA-256 of each
// file it was loaded from. ReadTokenizerInfo reads it back.
//
// Re-running into the same directory overwrites the same names. It refuses (FailedPrecondition,
// before writing any shard) when out_dir holds train_*.bin / val_*.bin shards this run would not
// overwrite, e.g. from an earlier run on a longer text: a training glob would pick them up.
//
// Thread-safety: PrepareText may run concurrently for different out_dirs.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
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
  // The tokenizer: byte-level when all three are empty; else BPE from a `tokenizers`
  // tokenizer.json, or from GPT-2's vocab.json and merges.txt (both, and not with tokenizer_json).
  std::string tokenizer_json;
  std::string vocab_json;
  std::string merges_txt;
  // BPE: bytes of text read at a time, >= 1 (small values are for tests).
  int64_t read_chunk_bytes = int64_t{1} << 20;
  // BPE: the most text held at once while no point to cut it at has come (see SafeSplit: a
  // stretch with no space after a letter or digit and no line break between non-space
  // characters, or any text with use_regex false); beyond it prepare fails rather than grow.
  int64_t max_unsplit_bytes = int64_t{64} << 20;
};

struct PrepareSummary {
  uint64_t text_bytes = 0;  // = train_bytes + val_bytes
  uint64_t train_bytes = 0;
  uint64_t val_bytes = 0;
  uint64_t train_tokens = 0;  // = train_bytes with the byte-level tokenizer
  uint64_t val_tokens = 0;
  std::vector<std::string> train_files;  // in order; concatenated they are the training split
  std::vector<std::string> val_files;
  // E.g. "byte-level" or "BPE (tokenizer.json)", and its vocabulary size.
  std::string tokenizer;
  int vocab_size = 0;
  std::string tokenizer_file;  // out_dir/tokenizer.txt
};

// Tokenizes `text_path` into shards under `out_dir` (created if missing). Errors name the file:
// NotFound for a missing text or tokenizer file, InvalidArgument for bad options, a tokenizer
// BpeTokenizer refuses, or a text too short to give both splits at least one token.
absl::StatusOr<PrepareSummary> PrepareText(const std::string& text_path, const std::string& out_dir,
                                           const PrepareOptions& options = {});

// What out_dir/tokenizer.txt says.
struct TokenizerInfo {
  std::string kind;    // "byte" or "bpe"
  std::string format;  // bpe: "tokenizer.json" or "vocab.json + merges.txt"
  int vocab_size = 0;
  // bpe: (SHA-256 in lowercase hex, path as given to prepare) for each file, in load order.
  std::vector<std::pair<std::string, std::string>> sha256;
};

// Reads `dir`/tokenizer.txt as PrepareText writes it. NotFound when there is none (shards from
// before it existed, or from elsewhere); InvalidArgument naming the file and line when malformed.
absl::StatusOr<TokenizerInfo> ReadTokenizerInfo(const std::string& dir);

}  // namespace dstrain::data
