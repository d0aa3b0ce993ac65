#include "worker/data/byte_tokenizer.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dstrain::data {

std::vector<uint16_t> ByteTokenizer::Encode(absl::string_view text) {
  std::vector<uint16_t> tokens(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    // Through unsigned char: plain char is signed on x86, and byte 0xFF must become 255, not -1.
    tokens[i] = static_cast<unsigned char>(text[i]);
  }
  return tokens;
}

std::string ByteTokenizer::Decode(absl::Span<const uint16_t> tokens) {
  std::string text;
  text.reserve(tokens.size());
  for (uint16_t t : tokens) {
    if (t < kVocabSize) {
      text.push_back(static_cast<char>(t));
    } else {
      text.append(kReplacement.data(), kReplacement.size());
    }
  }
  return text;
}

absl::StatusOr<std::string> ByteTokenizer::DecodeStrict(absl::Span<const uint16_t> tokens) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= kVocabSize) {
      return absl::InvalidArgumentError(absl::StrCat("token ", tokens[i], " at index ", i,
                                                     " is outside the byte vocabulary (< ",
                                                     kVocabSize, ")"));
    }
  }
  return Decode(tokens);
}

}  // namespace dstrain::data
