// Checkpoint save and load throughput of one rank's training state (fp32 parameters and Adam
// moments of a GPT with --layers x --embd), through the real commit protocol on the real file
// system, as ckpt_bench.sh compares with fio's sequential write and read of as many bytes.
//
//   ckpt_bench --dir DIR [--layers 4] [--embd 1024] [--drop-caches]
//
// Prints one JSON line: {"bytes": ..., "save_s": ..., "load_s": ...}. --drop-caches (root only)
// writes back and drops the page cache before the save and before the load, so both start from
// an empty cache and the load reads from the device, as ckpt_bench.sh runs fio.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/flags/flags.h"
#include "common/runtime/process_init.h"
#include "worker/checkpoint/commit.h"
#include "worker/config/config.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/engine/checkpoint_io.h"
#include "worker/engine/engine.h"
#include "worker/env/env.h"
#include "worker/model/gpt.h"

namespace dstrain {
namespace {

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Writes back dirty pages and empties the page cache, so each timed phase starts as fio's do.
void DropCaches() {
  ::sync();
  std::ofstream("/proc/sys/vm/drop_caches") << "3\n";
}

int Run(int argc, char** argv) {
  auto args = flags::ParseArgs(std::vector<std::string>(argv + 1, argv + argc),
                               {"dir", "layers", "embd"}, {"drop-caches"});
  if (!args.ok() || !args->Has("dir")) {
    absl::FPrintF(stderr, "usage: ckpt_bench --dir DIR [--layers L] [--embd C] [--drop-caches]\n");
    return 2;
  }
  const int L = *args->GetInt("layers", 4), C = *args->GetInt("embd", 1024);
  const std::string job = absl::StrFormat(
      R"({"train_micro_batch_size_per_gpu": 1,
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
          "model": {"type": "gpt", "n_layer": %d, "n_head": 8, "n_embd": %d, "vocab_size": 256,
                    "block_size": 64},
          "data": {"train": "unused.bin", "seq_len": 8}, "job": {"train_steps": 1}})",
      L, C);
  auto spec = config::ParseJobSpec(job, ".");
  if (!spec.ok()) {
    absl::FPrintF(stderr, "%s\n", spec.status().message());
    return 2;
  }
  tensor::CpuAllocator allocator;
  device::CpuOps ops(&allocator);
  model::GptConfig mc{L, 8, C, 256, spec->model.padded_vocab_size, 64};
  auto engine = engine::Engine::Initialize(*model::Gpt::Create(mc, &ops), *spec);
  if (!engine.ok()) {
    absl::FPrintF(stderr, "%s\n", engine.status().message());
    return 1;
  }
  engine::CheckpointOptions options{env::PosixEnv::Default(), args->Get("dir"), 1,
                                    comm::CommOptions{}};
  if (args->Has("drop-caches")) DropCaches();
  auto t0 = std::chrono::steady_clock::now();
  absl::Status s = engine::SaveCheckpoint(**engine, nullptr, options, "bench", "");
  const double save_s = Since(t0);
  if (!s.ok()) {
    absl::FPrintF(stderr, "save: %s\n", s.message());
    return 1;
  }
  auto listed = checkpoint::ListCommitted(env::PosixEnv::Default(), args->Get("dir"));
  uint64_t bytes = 0;
  for (const checkpoint::ShardRecord& r : listed->back().shards) bytes += r.bytes;
  if (args->Has("drop-caches")) DropCaches();
  t0 = std::chrono::steady_clock::now();
  auto loaded = engine::LoadCheckpoint(**engine, nullptr, options, "latest");
  const double load_s = Since(t0);
  if (!loaded.ok()) {
    absl::FPrintF(stderr, "load: %s\n", loaded.status().message());
    return 1;
  }
  absl::PrintF("{\"bytes\": %d, \"save_s\": %.4f, \"load_s\": %.4f, \"params\": %d}\n", bytes,
               save_s, load_s, (*engine)->model().layout().num_parameters());
  return 0;
}

}  // namespace
}  // namespace dstrain

int main(int argc, char** argv) {
  dstrain::InitProcess(argv);
  return dstrain::Run(argc, argv);
}
