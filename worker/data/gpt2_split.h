// GPT-2's pre-tokenization: the split of a text into the pieces BPE then merges within, and the
// Unicode classes it needs.
//
// GPT-2 (and Hugging Face's ByteLevel pre-tokenizer, which tokenizer.json names) cuts text with
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// matched leftmost-first, alternative by alternative, at each position in turn. RE2 (the regex
// library already linked) has \p{L} and \p{N} but no lookahead, and a general backtracking engine
// would be slow, so SplitGpt2 implements this one pattern by hand over UTF-8 code points: every
// code point falls in exactly one of four classes (letter, number, whitespace, other), and the
// pattern reduces to runs of one class plus the optional leading space and the whitespace rule.
//
// The classes follow `tokenizers` 0.22 (Oniguruma with Unicode 16.0): letter = general category L*,
// number = N*, whitespace = the White_Space property (what Oniguruma's \s means for Unicode text),
// other = everything else, unassigned code points included. Letters and numbers come from
// Debian 12's libre2 tables (Unicode 15.0), built once at first use, plus the few ranges Unicode
// 15.1 and 16.0 added (listed in gpt2_split.cc). //tests/tokenizer:unicode_class_test checks all
// 1,112,064 code points against what `tokenizers` itself does.
//
// Bytes that are not valid UTF-8 (a stray continuation byte, an overlong form, a surrogate, a
// truncated sequence) cannot come from a Python str, so `tokenizers` never sees them; here each
// such byte is one code point of class other, so that any file still tokenizes and decodes back
// to its exact bytes.
//
// Thread-safety: all functions may be called concurrently (the table is built under a
// function-local static).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"

namespace dstrain::data {

enum class CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

// What DecodeUtf8 stores for a byte that does not start a valid UTF-8 sequence.
inline constexpr char32_t kInvalidCodePoint = 0xFFFFFFFF;

// The class of `cp`; kOther for anything above U+10FFFF, surrogates and kInvalidCodePoint.
CharClass ClassOf(char32_t cp);

// Decodes the code point that starts `s` (non-empty): stores it in *cp and returns its length in
// bytes, 1 to 4. A byte that does not start a valid sequence is returned alone (length 1) with
// *cp = kInvalidCodePoint.
int DecodeUtf8(absl::string_view s, char32_t* cp);

// Splits `text` into the pieces of the regex above and appends them, in order, to `pieces`
// (which then concatenate to `text`). Empty text gives no pieces.
void SplitGpt2(absl::string_view text, std::vector<absl::string_view>& pieces);

}  // namespace dstrain::data
