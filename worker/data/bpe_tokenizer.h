// Byte-level BPE tokenizer (GPT-2's scheme), loaded from files the user provides, giving the same
// ids as Hugging Face `tokenizers` (docs/tokenization.md).
//
// Two formats:
//  - tokenizer.json of `tokenizers`: model.type "BPE" with model.vocab and model.merges (either the
//    "a b" string form or the ["a", "b"] pair form), added_tokens, pre_tokenizer ByteLevel (with
//    add_prefix_space and use_regex), decoder ByteLevel or null, post_processor ByteLevel or null,
//    normalizer null. Anything that would change the ids and is not implemented (another model,
//    normalizer, pre-tokenizer or post-processor, BPE dropout, subword prefixes and suffixes,
//    truncation, padding, added tokens with lstrip / rstrip / single_word) is refused by name
//    rather than silently tokenized differently.
//  - GPT-2's vocab.json + merges.txt (merges.txt may start with a "#version" line). The ByteLevel
//    pre-tokenizer without a prefix space is implied, as in GPT-2, and `<|endoftext|>`, when the
//    vocabulary holds it, is a special token matched whole, as GPT-2's tokenizers treat it.
//
// Encoding, as `tokenizers` does it: added tokens are found first (leftmost, then longest; those
// with normalized=false before those with normalized=true) and each becomes its id, whole, e.g.
// `<|endoftext|>` inside a text. The text between them is split by GPT-2's regex (gpt2_split.h;
// with add_prefix_space each such segment that does not start with a space gets one first), each
// piece's bytes become byte-level symbols, and adjacent pairs are merged by rank, lowest first
// (ties to the leftmost), until no pair in merges remains. Pieces already seen come from a cache.
//
// Vocabulary: vocab_size() is the largest id + 1, over model.vocab and added_tokens. Token shards
// store ids as uint16 (llm.c's format, token_shard.h), so Load refuses any id above 65535 (GPT-2's
// 50,257 fits; Llama 3's 128,256 does not). Every one of the 256 byte symbols must be in the
// vocabulary, so that any text can be encoded; then the unknown-token settings (unk_token,
// byte_fallback, fuse_unk) can never apply and are ignored.
//
// Decode maps each id back to its bytes (added tokens to their content) and concatenates them, so
// Decode(Encode(text)) == text for every byte string (without add_prefix_space, whose spaces
// decode too, as in `tokenizers`). Ids with no token write U+FFFD, as ByteTokenizer::Decode does.
//
// Errors: every Load error names the file and the field or line, e.g.
// "tok.json: model.merges[12]: \"zz\" is not in tok.json: model.vocab" or
// "merges.txt:3: expected \"left right\", got \"he\""; NotFound for a missing file,
// InvalidArgument for anything malformed or unsupported. Nothing on the input crashes.
//
// Thread-safety: Load, Decode and the accessors are safe concurrently; Encode updates the piece
// cache, so one BpeTokenizer must not Encode on two threads at once (copy it: copies share
// nothing).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace dstrain::data {

class BpeTokenizer {
 public:
  // Token shards hold uint16 ids.
  static constexpr int kMaxVocabSize = 65536;

  // A `tokenizers` tokenizer.json.
  static absl::StatusOr<BpeTokenizer> LoadTokenizerJson(const std::string& path);
  // GPT-2's vocab.json and merges.txt.
  static absl::StatusOr<BpeTokenizer> LoadVocabMerges(const std::string& vocab_path,
                                                      const std::string& merges_path);
  // The same from bytes already read; the paths only name the input in messages and in files().
  static absl::StatusOr<BpeTokenizer> FromTokenizerJson(const std::string& path,
                                                        absl::string_view json);
  static absl::StatusOr<BpeTokenizer> FromVocabMerges(const std::string& vocab_path,
                                                      absl::string_view vocab_json,
                                                      const std::string& merges_path,
                                                      absl::string_view merges_txt);

  // The ids of `text`. A piece (with use_regex false, a whole stretch between added tokens) must
  // be under 2 GiB; merging it takes about 28 bytes of memory per byte.
  std::vector<uint16_t> Encode(absl::string_view text);
  // Appends the ids of `text` to `out`. `continuation` says `text` continues text already
  // encoded (from a SafeSplit point), so it gets no prefix space of its own.
  void EncodeAppend(absl::string_view text, bool continuation, std::vector<uint16_t>& out);
  // A point p in (0, text.size()) such that encoding text[0, p), then text[p, ...) and whatever
  // follows as a continuation, gives the ids of encoding the whole at once: the last point before
  // a space that follows an ASCII letter or digit, or after a line break between two
  // non-whitespace code points, with no added token across it. 0 when there is none (or use_regex
  // is false). For streaming a large file in chunks. Only points after `from` are considered: a
  // caller that appended to a text already searched passes its old size less 4 (a code point cut
  // short at the old end may have hidden a point).
  size_t SafeSplit(absl::string_view text, size_t from = 0) const;

  std::string Decode(absl::Span<const uint16_t> ids) const;

  // Largest id + 1.
  int vocab_size() const { return static_cast<int>(token_bytes_.size()); }
  // The id of the model token whose bytes are `bytes` (not its byte-level spelling: "\n", not
  // "Ċ"), else of the added token with that content, else -1.
  int TokenId(absl::string_view bytes) const;
  // What was loaded: "tokenizer.json" or "vocab.json + merges.txt".
  const std::string& format() const { return format_; }
  // The files loaded, in order, and the SHA-256 of each (lowercase hex): the tokenizer's identity.
  const std::vector<std::string>& files() const { return files_; }
  const std::vector<std::string>& sha256() const { return sha256_; }

 private:
  struct MergeRule {
    uint32_t rank;
    uint32_t new_id;
  };
  struct AddedToken {
    std::string content;
    uint16_t id;
  };
  struct Cached {
    uint32_t offset;
    uint32_t length;
  };
  // Construction steps shared by both formats; `where` starts each message ("FILE: FIELD").
  absl::Status SetVocab(const std::vector<std::pair<std::string, int64_t>>& vocab,
                        const std::string& where);
  absl::Status AddMerge(const std::string& left, const std::string& right, uint32_t rank,
                        const std::string& where);
  absl::Status AddAddedToken(const std::string& content, int64_t id, bool normalized,
                             const std::string& where);
  void Finish(std::vector<std::string> files, std::vector<std::string> digests, std::string format);

  BpeTokenizer() = default;
  // Leftmost-longest match of `tokens` in `text` from `from`: its start and token index, or
  // {npos, -1}.
  std::pair<size_t, int> FindAdded(const std::vector<AddedToken>& tokens, absl::string_view text,
                                   size_t from) const;
  // Whether an added token occurrence covers text[p - 1] or text[p]; one cut off by the end of
  // `text` counts.
  bool AddedOverlaps(absl::string_view text, size_t p) const;
  void EncodeSegment(absl::string_view text, bool add_prefix, std::vector<uint16_t>& out);
  void EncodePiece(absl::string_view piece, std::vector<uint16_t>& out);
  void MergePiece(absl::string_view piece, std::vector<uint16_t>& out);

  std::string format_;
  std::vector<std::string> files_;
  std::vector<std::string> sha256_;
  bool add_prefix_space_ = false;
  bool use_regex_ = true;
  bool ignore_merges_ = false;

  uint16_t byte_id_[256] = {};                           // the id of each byte's symbol
  std::vector<std::string> token_bytes_;                 // id -> bytes
  std::vector<bool> has_token_;                          // id -> whether any token has it
  absl::flat_hash_map<std::string, uint16_t> by_bytes_;  // model token bytes -> id
  // Model token spelling (byte-level characters, as in the files) -> id; only while loading.
  absl::flat_hash_map<std::string, uint16_t> by_spelling_;
  absl::flat_hash_map<uint64_t, MergeRule> merges_;  // (left id << 32 | right id) -> rule
  // Matched first, then in the text between their matches: normalized=false tokens, then
  // normalized=true ones (there is no normalizer, but `tokenizers` keeps the two passes).
  std::vector<AddedToken> added_raw_;
  std::vector<AddedToken> added_normalized_;
  bool added_first_byte_[256] = {};  // whether some added token starts with the byte
  std::string vocab_where_;          // "FILE: model.vocab" or "vocab.json", for messages

  // Piece bytes -> its ids in cache_ids_. Cleared when it reaches kCacheEntries.
  static constexpr size_t kCacheEntries = 1 << 17;
  absl::flat_hash_map<std::string, Cached> cache_;
  std::vector<uint16_t> cache_ids_;
  // Scratch for MergePiece, kept to avoid allocating per piece.
  struct Symbol {
    uint32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    uint32_t rank;
    int32_t pos;
    uint32_t new_id;
  };
  std::vector<Symbol> symbols_;
  std::vector<Candidate> heap_;
  std::vector<absl::string_view> pieces_;
};

}  // namespace dstrain::data
