// Fuzzes the checkpoint readers (worker/checkpoint/commit.h, worker/engine/checkpoint_io.h): the
// input is a checkpoint directory tree (memory_env.h's "=== NAME" format; corpus/checkpoint/ holds
// real saves made by make_seeds), and every reader runs over it: ListCommitted (each tag's
// manifest and the sizes it lists), CheckpointReader::Open("latest"), VerifyAll (every
// checksum), a verified ShardReader over shard 0 read through its per-rank state and skipped to
// the end, and ExportCheckpoint (the model shape and the grid from the manifest's meta, every
// shard resharded into one model). A damaged checkpoint must be an error, never a crash, a read
// out of bounds or an allocation the files do not justify.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "tests/fuzz/memory_env.h"
#include "worker/checkpoint/commit.h"
#include "worker/engine/checkpoint_io.h"

namespace {

constexpr char kRoot[] = "/ckpt";

// Where ExportCheckpoint writes the model of a checkpoint that reads back whole (it writes
// through the POSIX Env): a fresh directory per process.
const std::string& OutDir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/ckpt_fuzz.XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    return new std::string(pattern);
  }();
  return *dir;
}

void ReadEverything(dstrain::env::Env* env) {
  using dstrain::checkpoint::CheckpointReader;
  (void)dstrain::checkpoint::ListCommitted(env, kRoot);
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      CheckpointReader::Open(env, kRoot, dstrain::checkpoint::kLatestTag);
  if (!reader.ok()) return;
  (void)(*reader)->VerifyAll();
  const auto& shards = (*reader)->manifest().shards;
  if (!shards.empty()) {
    auto shard = (*reader)->OpenShard(shards.front().name);
    if (shard.ok()) {
      uint64_t n = 0;
      if ((*shard)->Read(&n, sizeof(n)).ok() && n <= (*shard)->remaining()) {
        (void)(*shard)->Skip(n);
      }
      (void)(*shard)->Finish();
    }
  }
  (void)dstrain::engine::ExportCheckpoint(env, kRoot, dstrain::checkpoint::kLatestTag,
                                          OutDir() + "/model.bin");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dstrain::fuzz::MemoryEnv env;
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  if (dstrain::fuzz::AddFilesFromInput(input, kRoot, &env) == 0) return 0;
  ReadEverything(&env);
  return 0;
}
