// Measures BpeTokenizer::Encode on one core: MB of text per second, first pass (empty piece cache)
// and later passes (warm cache, the steady state of a long corpus).
//
//   bazel run //tests/tokenizer:bpe_throughput -- $PWD/tests/tokenizer/tokenizer.json
//       $PWD/deploy/local/demo/tinyshakespeare.txt [PASSES]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_format.h"
#include "worker/data/bpe_tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bpe_throughput TOKENIZER.json TEXT [PASSES]\n");
    return 2;
  }
  const int passes = argc > 3 ? std::atoi(argv[3]) : 5;
  std::ifstream in(argv[2], std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  const auto start_load = std::chrono::steady_clock::now();
  auto tokenizer = dstrain::data::BpeTokenizer::LoadTokenizerJson(argv[1]);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_load).count();
  // The first Encode builds the Unicode class table (once per process): timed on its own.
  const auto start_table = std::chrono::steady_clock::now();
  tokenizer->Encode("warm up");
  const double table_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_table).count();
  absl::PrintF("loaded %s (vocab %d) in %.3f s, Unicode table %.3f s; text %d bytes\n", argv[1],
               tokenizer->vocab_size(), load_s, table_s, text.size());
  for (int pass = 0; pass < passes; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<uint16_t> ids = tokenizer->Encode(text);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    absl::PrintF("pass %d: %d tokens in %.3f s = %.1f MB/s (%.2f bytes/token)\n", pass + 1,
                 ids.size(), s, text.size() / s / 1e6,
                 static_cast<double>(text.size()) / ids.size());
  }
  return 0;
}
