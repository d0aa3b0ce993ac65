// Fuzzes the BPE tokenizer's loaders (worker/data/bpe_tokenizer.h), which read files a user
// gives `dstrain prepare`: the input as a Hugging Face tokenizer.json and, split at its first NUL
// byte, as GPT-2's vocab.json + merges.txt. A malformed file must be an error naming it, never a
// crash; a tokenizer that loads encodes a fixed text and the input's first KiB to ids below its
// vocab_size and decodes them again.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "worker/data/bpe_tokenizer.h"

namespace {

using dstrain::data::BpeTokenizer;

void Exercise(absl::StatusOr<BpeTokenizer> tokenizer, absl::string_view file,
              absl::string_view input) {
  if (!tokenizer.ok()) {
    if (!absl::StrContains(tokenizer.status().message(), file)) std::abort();  // names the file
    return;
  }
  for (absl::string_view text :
       {absl::string_view("Hello, world! It's 2026.\n\n  tabs\there <|endoftext|> caf\xc3\xa9"),
        input.substr(0, 1024)}) {
    const std::vector<uint16_t> ids = tokenizer->Encode(text);
    for (const uint16_t id : ids) {
      if (id >= tokenizer->vocab_size()) std::abort();
    }
    (void)tokenizer->Decode(ids);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view in(reinterpret_cast<const char*>(data), size);
  Exercise(BpeTokenizer::FromTokenizerJson("tokenizer.json", in), "tokenizer.json", in);
  if (const size_t nul = in.find('\0'); nul != absl::string_view::npos) {
    const absl::string_view vocab = in.substr(0, nul), merges = in.substr(nul + 1);
    absl::StatusOr<BpeTokenizer> t =
        BpeTokenizer::FromVocabMerges("vocab.json", vocab, "merges.txt", merges);
    if (!t.ok() && !absl::StrContains(t.status().message(), "vocab.json") &&
        !absl::StrContains(t.status().message(), "merges.txt")) {
      std::abort();
    }
    if (t.ok()) Exercise(std::move(t), "", in);
  }
  return 0;
}
