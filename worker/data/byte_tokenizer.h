// Byte-level tokenizer: each byte of the text is one token, its value (vocabulary of 256).
//
// No merges, no special tokens, no normalisation: Encode then Decode returns the input bytes
// exactly, including NUL, 0xFF and multi-byte UTF-8 sequences (split into their bytes). This is the
// vocabulary of `dstrain prepare` and of the demo model (vocab_size 256).
//
// Ids >= 256 have no byte. A model whose embedding table is padded past 256 rows (for GEMM-friendly
// shapes, as llm.c pads 50257 to 50304) can still sample them, so Decode must take them: it writes
// U+FFFD REPLACEMENT CHARACTER (EF BF BD) for each, the convention of UTF-8 decoders for bytes that
// mean nothing, so generated text prints and the anomaly stays visible. DecodeStrict instead
// reports the first such id and its position, for callers that must not lose information.
// Decoded bytes are not guaranteed to be valid UTF-8 (a model can sample a broken sequence).
//
// Thread-safety: stateless; every function may be called concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace dstrain::data {

class ByteTokenizer {
 public:
  static constexpr int kVocabSize = 256;
  // UTF-8 of U+FFFD, written by Decode for ids outside the vocabulary.
  static constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";

  // One token per byte, in order.
  static std::vector<uint16_t> Encode(absl::string_view text);
  // Bytes for ids < 256; kReplacement for each id >= 256.
  static std::string Decode(absl::Span<const uint16_t> tokens);
  // Like Decode, but InvalidArgument naming the first id >= 256 and its index.
  static absl::StatusOr<std::string> DecodeStrict(absl::Span<const uint16_t> tokens);
};

}  // namespace dstrain::data
