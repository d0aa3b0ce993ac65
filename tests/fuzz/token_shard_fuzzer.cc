// Fuzzes the reader of llm.c token shards (worker/data/token_shard.h) and the data source over it
// (data_loader.h): the input is written as a shard file, opened both ways (TokenShard::Open with
// each access hint, DataSource::Open), every token read, and when the shard is usable a small
// shuffled loader cuts two batches from it. A file that is not a whole version-1 shard must be an
// error, never a read past the mapping. (TokenShard maps the file, so the input goes to a real
// file: one per process, rewritten for each input.)
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "worker/data/data_loader.h"
#include "worker/data/token_shard.h"

namespace {

const std::string& ShardPath() {
  static const std::string* path = [] {
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/shard_fuzz.XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    return new std::string(pattern + "/train_000.bin");
  }();
  return *path;
}

uint64_t SumTokens(const dstrain::data::TokenShard& shard) {
  uint64_t sum = 0;
  for (const uint16_t t : shard.tokens()) sum += t;
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using dstrain::data::AccessHint;
  {
    std::ofstream out(ShardPath(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) std::abort();
  }
  for (const AccessHint hint : {AccessHint::kSequential, AccessHint::kRandom}) {
    auto shard = dstrain::data::TokenShard::Open(ShardPath(), hint);
    if (shard.ok() && SumTokens(*shard) == UINT64_MAX) std::abort();  // keeps the reads
  }
  auto source = dstrain::data::DataSource::Open(ShardPath());
  if (!source.ok()) return 0;
  dstrain::data::DataLoaderOptions options;
  options.batch_size = 2;
  options.seq_len = 4;
  options.seed = 7;
  auto loader = dstrain::data::DataLoader::Create(*source, options);
  if (!loader.ok()) return 0;
  std::vector<int32_t> inputs(8), targets(8);
  loader->NextBatch(inputs.data(), targets.data());
  loader->NextBatch(inputs.data(), targets.data());
  return 0;
}
